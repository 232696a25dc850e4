//! SSH signatures (SSHSIG, namespace `git`) on commits and annotated tags, verified
//! in-process against the allowed signers.
