//! git's `allowed_signers` file (gpg.ssh.allowedSignersFile): principals, options
//! (`namespaces`, `valid-after`, `valid-before`, `cert-authority`) and public keys.
