//! How berth reaches an MQTT broker, for the agent's subscription and `berth notify`
//! alike: the broker's address, its credentials (`password_file`), and TLS (system CAs,
//! `ca_file`, a client certificate for mutual TLS), as rumqttc's options.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_spec::node::{Broker, Notify};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

/// The largest password, CA, certificate or key file read.
const MAX_FILE: u64 = 1024 * 1024;
/// The largest MQTT packet taken from or sent to the broker. A revision message is
/// under 4 KiB and a status message a few; a bigger packet ends the connection (it is
/// made again with the backoff).
pub const MAX_PACKET: usize = 64 * 1024;
/// How often the client pings an idle broker; a broker gone silently is noticed within
/// about one and a half of these.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The TCP and TLS connection, and the broker's CONNACK, within this.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// Why a connection to the broker could not be set up. Never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("`{key}` is not an mqtt:// or mqtts:// URL with a host: {why}")]
    Url {
        key: &'static str,
        #[source]
        why: berth_spec::node::BrokerError,
    },
    #[error("cannot read {key} {}", .path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key} {} is not usable: {why}", .path.display())]
    Unusable {
        key: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("{what} is only for an mqtts:// broker")]
    PlainWithTls { what: &'static str },
    #[error("a password needs a user name (MQTT sends a password only with one)")]
    PasswordWithoutUser,
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
}

/// Where the broker is and how berth proves who it is. The `key`s name the
/// configuration keys (`source.notify.ca_file`) or the flags (`--ca-file`) in errors.
#[derive(Debug, Clone)]
pub struct Settings {
    pub broker: Broker,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// How errors name each file: the agent's configuration keys, or the CLI's flags.
    pub names: Names,
}

/// How errors name each file.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    pub mqtt: &'static str,
    pub password_file: &'static str,
    pub ca_file: &'static str,
    pub client_cert: &'static str,
    pub client_key: &'static str,
}

/// The names of the node configuration's keys.
pub const CONFIG_NAMES: Names = Names {
    mqtt: "source.notify.mqtt",
    password_file: "source.notify.password_file",
    ca_file: "source.notify.ca_file",
    client_cert: "source.notify.client_cert",
    client_key: "source.notify.client_key",
};

/// The names of `berth notify`'s flags.
pub const FLAG_NAMES: Names = Names {
    mqtt: "--mqtt",
    password_file: "--password-file",
    ca_file: "--ca-file",
    client_cert: "--client-cert",
    client_key: "--client-key",
};

impl Settings {
    /// The settings of `source.notify`.
    pub fn of(n: &Notify) -> Result<Settings, ConnError> {
        let broker = Broker::parse(&n.mqtt).map_err(|why| ConnError::Url {
            key: CONFIG_NAMES.mqtt,
            why,
        })?;
        Ok(Settings {
            broker,
            username: n.username.clone(),
            password_file: n.password_file.clone(),
            ca_file: n.ca_file.clone(),
            client_cert: n.client_cert.clone(),
            client_key: n.client_key.clone(),
            names: CONFIG_NAMES,
        })
    }

    /// The options that need no file: the broker, the id, keep-alive, clean sessions
    /// and the packet limit.
    pub fn base_options(&self, client_id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, self.broker.host.clone(), self.broker.port);
        o.set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        o
    }

    /// rumqttc's options for a client `client_id`, every file read now (the agent
    /// makes them again before each connection attempt).
    pub fn options(&self, client_id: &str) -> Result<MqttOptions, ConnError> {
        let mut o = self.base_options(client_id);
        match (&self.username, &self.password_file) {
            (Some(user), Some(file)) => {
                let password = self.password(file)?;
                o.set_credentials(user.clone(), password.as_str());
            }
            (Some(user), None) => {
                o.set_credentials(user.clone(), "");
            }
            (None, Some(_)) => return Err(ConnError::PasswordWithoutUser),
            (None, None) => {}
        }
        if self.broker.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(self.tls()?),
            )));
        } else {
            for (set, what) in [
                (self.ca_file.is_some(), self.names.ca_file),
                (self.client_cert.is_some(), self.names.client_cert),
                (self.client_key.is_some(), self.names.client_key),
            ] {
                if set {
                    return Err(ConnError::PlainWithTls { what });
                }
            }
        }
        Ok(o)
    }

    /// The first line of the password file, without its line end.
    fn password(&self, file: &Path) -> Result<Zeroizing<String>, ConnError> {
        let text = read(file, self.names.password_file)?;
        let text =
            Zeroizing::new(
                String::from_utf8(text.to_vec()).map_err(|_| ConnError::Unusable {
                    key: self.names.password_file,
                    path: file.to_path_buf(),
                    why: "it is not UTF-8 text".into(),
                })?,
            );
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(ConnError::Unusable {
                key: self.names.password_file,
                path: file.to_path_buf(),
                why: "its first line is empty".into(),
            });
        }
        Ok(Zeroizing::new(line.to_string()))
    }

    /// The TLS client: the system's CAs and `ca_file`, and the client certificate.
    fn tls(&self) -> Result<rustls::ClientConfig, ConnError> {
        let mut roots = rustls::RootCertStore::empty();
        // The system's CAs; one it cannot read is left out (rustls-native-certs says
        // which in its errors, which a node without CAs would repeat at every start).
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(ca) = &self.ca_file {
            let certs = certificates(ca, self.names.ca_file)?;
            for cert in certs {
                roots.add(cert).map_err(|e| ConnError::Unusable {
                    key: self.names.ca_file,
                    path: ca.clone(),
                    why: format!("not a CA certificate: {e}"),
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ConnError::Tls)?
            .with_root_certificates(roots);
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, self.names.client_cert)?;
                let pem = read(key, self.names.client_key)?;
                let key_der =
                    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| ConnError::Unusable {
                        key: self.names.client_key,
                        path: key.clone(),
                        why: format!("no PEM private key in it ({e})"),
                    })?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| ConnError::Unusable {
                        key: self.names.client_key,
                        path: key.clone(),
                        why: format!("it does not go with the client certificate: {e}"),
                    })
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(_), None) | (None, Some(_)) => Err(ConnError::Unusable {
                key: self.names.client_cert,
                path: self
                    .client_cert
                    .clone()
                    .or_else(|| self.client_key.clone())
                    .unwrap_or_default(),
                why: format!(
                    "{} and {} go together",
                    self.names.client_cert, self.names.client_key
                ),
            }),
        }
    }
}

/// The PEM certificates of `path`, at least one.
fn certificates(path: &Path, key: &'static str) -> Result<Vec<CertificateDer<'static>>, ConnError> {
    let pem = read(path, key)?;
    let unusable = |why: String| ConnError::Unusable {
        key,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(unusable("it holds no certificate".into()));
    }
    Ok(certs)
}

/// A small file the configuration or a flag names, read whole (a regular file of at
/// most [`MAX_FILE`] bytes; a FIFO is not opened).
fn read(path: &Path, key: &'static str) -> Result<Zeroizing<Vec<u8>>, ConnError> {
    let unusable = |why: String| ConnError::Unusable {
        key,
        path: path.to_path_buf(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|source| ConnError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(unusable("not a regular file".into()));
    }
    if meta.len() > MAX_FILE {
        return Err(unusable(format!(
            "{} bytes; at most {MAX_FILE} are read",
            meta.len()
        )));
    }
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| ConnError::Read {
            key,
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> Settings {
        Settings {
            broker: Broker::parse(url).expect("url"),
            username: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            names: FLAG_NAMES,
        }
    }

    #[test]
    fn a_password_is_the_first_line_of_its_file_and_never_in_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("pass");
        std::fs::write(&file, "s3cret-pass\nignored\n").expect("write");
        let mut s = settings("mqtt://127.0.0.1:1999");
        s.username = Some("edge".into());
        s.password_file = Some(file.clone());
        let o = s.options("berth-edge").expect("options");
        let login = o.credentials().expect("login");
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("edge", "s3cret-pass")
        );
        assert_eq!(o.broker_address(), ("127.0.0.1".to_string(), 1999));
        assert_eq!(o.client_id(), "berth-edge");

        std::fs::write(&file, "\nsecret-on-line-2\n").expect("write");
        let e = s.options("x").expect_err("empty first line");
        let text = crate::util::error_chain(&e);
        assert!(
            text.contains("first line is empty") && !text.contains("secret"),
            "{text}"
        );

        s.password_file = Some(dir.path().join("missing"));
        let e = s.options("x").expect_err("missing");
        assert!(
            crate::util::error_chain(&e).contains("--password-file"),
            "{e}"
        );

        s.username = None;
        s.password_file = Some(file);
        assert!(matches!(
            s.options("x"),
            Err(ConnError::PasswordWithoutUser)
        ));
    }

    #[test]
    fn tls_files_are_checked_when_the_options_are_made() {
        let dir = tempfile::tempdir().expect("tmp");
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "not a certificate").expect("write");
        let mut s = settings("mqtts://localhost");
        assert!(s.options("x").is_ok(), "system CAs alone");
        s.ca_file = Some(bad.clone());
        let e = s.options("x").expect_err("bad CA");
        assert!(
            crate::util::error_chain(&e).contains("holds no certificate"),
            "{e}"
        );
        s.ca_file = Some(dir.path().to_path_buf());
        let e = s.options("x").expect_err("a directory");
        assert!(
            crate::util::error_chain(&e).contains("not a regular file"),
            "{e}"
        );

        let mut plain = settings("mqtt://localhost");
        plain.ca_file = Some(bad);
        assert!(matches!(
            plain.options("x"),
            Err(ConnError::PlainWithTls { what: "--ca-file" })
        ));
    }
}
