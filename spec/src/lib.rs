//! berth's spec model (placeholder; see the foundation issue).
