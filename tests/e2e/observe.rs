//! Observe mode (#20): written by a helper.
