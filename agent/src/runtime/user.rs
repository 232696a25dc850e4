//! Resolving a container's user the way Docker and runc do, from the image's own
//! `/etc/passwd` and `/etc/group` (passed in as text: this module does no I/O).
//!
//! The accepted forms are those of the image-spec `User` field: `user`, `uid`,
//! `user:group`, `uid:gid`, `uid:group`, `user:gid`. The rules follow runc's
//! `GetExecUser`, which Docker uses:
//! - a part is numeric when Go's `strconv.Atoi` reads it (an optional sign, leading
//!   zeros allowed: `00`, `+0` and `-0` are 0); `berth_spec::user` holds that parser, so
//!   offline validation and the policy read ids exactly as this module does;
//! - the user is looked up by uid when numeric, else by name; a numeric uid missing from
//!   `/etc/passwd` is used as is, with primary gid 0; a name that is missing is an error;
//! - the primary group is the passwd entry's, unless a group is given, which is looked up
//!   by gid when numeric, else by name (a numeric gid missing from `/etc/group` is used
//!   as is);
//! - supplementary groups are the `/etc/group` entries listing the user's name as a
//!   member, and only when no group was given (an explicit group replaces them all);
//! - an empty user means root.
//!
//! The result feeds `process.user` of the OCI config and the policy's `run-as-non-root`
//! and `non-root-group` re-checks, which cannot be judged from a name alone.

use berth_spec::user::{self as spec_user, Id, MAX_ID};

/// A user resolved to numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, in `/etc/group` order, without duplicates.
    pub additional_gids: Vec<u32>,
    /// The user's name when `/etc/passwd` has an entry for it.
    pub name: Option<String>,
}

/// Why a user string cannot be resolved. The caller adds the container and image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user `{0}` not found in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("group `{0}` not found in the image's /etc/group")]
    UnknownGroup(String),
    #[error("uid or gid `{0}` is out of range (0 to {MAX_ID})")]
    OutOfRange(String),
}

#[derive(Debug)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

#[derive(Debug)]
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Lines that are empty, comments or malformed are skipped, as runc's parser does in
/// effect (it cannot match them).
fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

fn passwd_entries(text: &str) -> Vec<PasswdEntry<'_>> {
    entries(text)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?,
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn group_entries(text: &str) -> Vec<GroupEntry<'_>> {
    entries(text)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?,
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Parses one part of `user`: `Ok(None)` when it is a name.
fn numeric(s: &str) -> Result<Option<u32>, UserError> {
    match spec_user::parse_id(s) {
        Ok(Id::Number(n)) => Ok(Some(n)),
        Ok(Id::Name(_)) => Ok(None),
        Err(e) => Err(UserError::OutOfRange(e.0)),
    }
}

/// Resolves `spec` (`user[:group]`) against the image's passwd and group files; `None`
/// files behave as empty ones, so only numeric ids resolve.
pub fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, UserError> {
    let (user_arg, group_arg) = spec_user::split(spec);
    let users = passwd_entries(passwd.unwrap_or(""));
    let groups = group_entries(group.unwrap_or(""));

    // An empty user is root, named if the image says so.
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    let uid_arg = numeric(user_arg)?;
    // A numeric user is always a uid, never a name (runc's rule).
    let found = users.iter().find(|u| match uid_arg {
        Some(uid) => u.uid == uid,
        None => u.name == user_arg,
    });
    let (uid, mut gid, name) = match (found, uid_arg) {
        (Some(u), _) => (u.uid, u.gid, Some(u.name.to_string())),
        (None, Some(uid)) => (uid, 0, None),
        (None, None) => return Err(UserError::UnknownUser(user_arg.to_string())),
    };

    let mut additional_gids = Vec::new();
    match group_arg {
        Some(g) => {
            let gid_arg = numeric(g)?;
            gid = match groups.iter().find(|e| match gid_arg {
                Some(gid) => e.gid == gid,
                None => e.name == g,
            }) {
                Some(e) => e.gid,
                None => gid_arg.ok_or_else(|| UserError::UnknownGroup(g.to_string()))?,
            };
        }
        None => {
            if let Some(n) = &name {
                for e in groups.iter().filter(|e| e.members.contains(&n.as_str())) {
                    if !additional_gids.contains(&e.gid) {
                        additional_gids.push(e.gid);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:10001:10001:App:/home/app:/bin/sh
broken line
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:root,app
app:x:10001:
audio:x:29:app
video:x:44: app , daemon
dup:x:29:app
";

    fn r(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn by_name_with_supplementary_groups() {
        let u = r("app").unwrap();
        assert_eq!((u.uid, u.gid), (10001, 10001));
        assert_eq!(u.additional_gids, vec![10, 29, 44]);
        assert_eq!(u.name.as_deref(), Some("app"));
    }

    #[test]
    fn numeric_uid_known_and_unknown() {
        let u = r("10001").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.len()), (10001, 10001, 3));
        let u = r("4242").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert!(u.additional_gids.is_empty() && u.name.is_none());
    }

    #[test]
    fn explicit_group_replaces_supplementary() {
        let u = r("app:audio").unwrap();
        assert_eq!((u.uid, u.gid), (10001, 29));
        assert!(u.additional_gids.is_empty());
        let u = r("0:4000").unwrap();
        assert_eq!((u.uid, u.gid), (0, 4000));
        let u = r("4242:app").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 10001));
    }

    #[test]
    fn empty_is_root() {
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.additional_gids, vec![10]);
        let u = resolve("", None, None).unwrap();
        assert_eq!((u.uid, u.gid, u.name), (0, 0, None));
    }

    #[test]
    fn errors() {
        assert_eq!(r("nobody"), Err(UserError::UnknownUser("nobody".into())));
        assert_eq!(r("app:staff"), Err(UserError::UnknownGroup("staff".into())));
        assert_eq!(
            r("4294967296"),
            Err(UserError::OutOfRange("4294967296".into()))
        );
        assert_eq!(
            resolve("app", None, None),
            Err(UserError::UnknownUser("app".into()))
        );
        assert!(
            r("nobody")
                .unwrap_err()
                .to_string()
                .contains("`nobody` not found in the image's /etc/passwd")
        );
    }

    /// Apply and audit read a user the same way: the forms that resolve to uid 0 here
    /// (runc's reading) are exactly those the offline `run-as-non-root` rule flags, and
    /// likewise gid 0 and `non-root-group`.
    #[test]
    fn offline_policy_flags_exactly_what_resolves_to_root() {
        use berth_policy::{Date, Evaluator, Facts, HostContext, Policy, Rule, Status};
        let policy = Policy::profile("restricted").unwrap();
        let host = HostContext::default();
        let today = Date {
            year: 2026,
            month: 1,
            day: 1,
        };
        let ev = Evaluator::new(&policy, &host, today);
        for spec in [
            "0",
            "00",
            "+0",
            "-0",
            "00:00",
            "+0:+0",
            "-0:-0",
            "0000:10001",
            "10001:+00",
            "10001",
            "+10001",
            "010001:010001",
            "4242:0",
            "4242:+4242",
        ] {
            let text = format!(
                "[container.app]\nimage = \"r.example/app@sha256:{}\"\nuser = \"{spec}\"\n",
                "0".repeat(64)
            );
            let tree = berth_spec::Tree::from_sources(vec![berth_spec::SourceFile {
                path: "app.toml".into(),
                text,
            }]);
            let checked = berth_spec::check(&tree, None);
            assert!(checked.errors.is_empty(), "{spec}: {:?}", checked.errors);
            let findings = ev.evaluate(&checked.state.containers["app"], &Facts::default());
            let flagged = |rule| {
                findings
                    .iter()
                    .any(|f| f.rule == rule && f.status == Status::Violation)
            };
            // No passwd or group file: what the numbers alone mean.
            let who = resolve(spec, None, None).unwrap();
            assert_eq!(flagged(Rule::RunAsNonRoot), who.uid == 0, "{spec}: uid");
            if spec.contains(':') {
                assert_eq!(flagged(Rule::NonRootGroup), who.gid == 0, "{spec}: gid");
            }
        }
    }

    #[test]
    fn numeric_parts_are_ids_never_names() {
        // A passwd entry named like a number does not capture that number.
        let passwd = "0:x:10001:10001::/:/bin/sh\nroot:x:0:0::/root:/bin/sh\n";
        let u = resolve("+0", Some(passwd), None).unwrap();
        assert_eq!((u.uid, u.gid, u.name.as_deref()), (0, 0, Some("root")));
        let u = resolve("0", Some(passwd), None).unwrap();
        assert_eq!(u.uid, 0);
        assert_eq!(r("-1"), Err(UserError::OutOfRange("-1".into())));
    }
}
