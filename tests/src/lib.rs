//! Shared harness for the end-to-end suite: finds the built binaries and runs them in temp dirs.
