//! berth's security policy engine (placeholder; see the policy issue).
