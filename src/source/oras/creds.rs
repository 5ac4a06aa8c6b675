//! Registry credentials from Docker-style config files (`auths` map), the pure half: which files
//! to try, how to find a registry's entry in one file's text, and the Basic header it yields.
//!
//! Invariant: secrets never leave through `Debug`, `Display` or error messages — errors name the
//! `auths` key and what is wrong with it, never the encoded or decoded value. Keys are matched the
//! way Docker does (`host`, `host:port`, `https://host/v1/` all mean host[:port]); the Docker Hub
//! aliases (`docker.io`, `index.docker.io`, `registry-1.docker.io`) all match each other, since
//! `docker login` stores Hub credentials under `https://index.docker.io/v1/`.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::Value;

use super::reference::{OrasError, OrasErrorKind, DOCKER_HUB_ALIASES};

/// Docker config files are a few KiB; anything bigger is not one.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Docker writes padded base64, hand-written files sometimes omit it; both mean the same bytes.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Also a wire type: the client reads the caller's own config and sends the registry's entry in
/// its download request (`registry_credential`), over the local socket only.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub username: String,
    pub password: String,
    /// `identitytoken`: an OAuth2 refresh token, traded at the token realm by POST (then the
    /// username and password, often empty, are not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_token: Option<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("identity_token", &self.identity_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A lookup's answer plus things worth telling the user (credential helpers we cannot run). Notes hold key names only, never secrets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lookup {
    pub credential: Option<Credential>,
    pub notes: Vec<String>,
}

fn cred_err(message: String) -> OrasError {
    OrasError::new(OrasErrorKind::BadCredentials, message)
}

/// `https://Host:5000/v1/` → `host:5000` (Docker's `ConvertToHostname`, plus lowercasing since
/// host names are case-insensitive).
fn normalise_key(key: &str) -> String {
    let key = key.trim().to_ascii_lowercase();
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(&key);
    key.split('/').next().unwrap_or_default().to_owned()
}

/// Lower is better: the exact key, then a normalised match, then a Docker Hub alias.
fn match_rank(key: &str, registry: &str) -> Option<u8> {
    let hub = |h: &str| DOCKER_HUB_ALIASES.contains(&h);
    let normalised = normalise_key(key);
    if key == registry {
        Some(0)
    } else if normalised == registry {
        Some(1)
    } else if hub(&normalised) && hub(registry) {
        Some(2)
    } else {
        None
    }
}

/// [`lookup_with_notes`] without the notes.
#[cfg(test)]
pub fn lookup(config_json: &str, registry: &str) -> Result<Option<Credential>, OrasError> {
    lookup_with_notes(config_json, registry).map(|l| l.credential)
}

/// Finds `registry` (`host[:port]`) in one config file's text. The best-ranked entry holding a
/// usable credential wins; an entry with a malformed `auth` is an error (a typo should not turn
/// into a silent anonymous pull).
pub fn lookup_with_notes(config_json: &str, registry: &str) -> Result<Lookup, OrasError> {
    if config_json.len() > MAX_CONFIG_BYTES {
        return Err(cred_err(format!("docker config is {} bytes, limit {MAX_CONFIG_BYTES}", config_json.len())));
    }
    // Via Value, so a parse error can only be a syntax error: a position, never file content.
    let json: Value = serde_json::from_str(config_json)
        .map_err(|e| cred_err(format!("docker config is not valid JSON (line {}, column {})", e.line(), e.column())))?;
    let registry = registry.to_ascii_lowercase();
    let mut out = Lookup { credential: None, notes: helper_notes(&json, &registry) };
    let Some(auths) = json.get("auths").and_then(Value::as_object) else {
        return Ok(out);
    };
    let mut matches: Vec<(u8, &String, &Value)> =
        auths.iter().filter_map(|(key, entry)| match_rank(key, &registry).map(|rank| (rank, key, entry))).collect();
    matches.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (_, key, entry) in matches {
        if let Some(credential) = decode_entry(key, entry)? {
            out.credential = Some(credential);
            break;
        }
    }
    Ok(out)
}

/// Credential helpers are programs; running them is not this module's job (nor supported yet).
fn helper_notes(json: &Value, registry: &str) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(helpers) = json.get("credHelpers").and_then(Value::as_object) {
        for key in helpers.keys().filter(|k| match_rank(k, registry).is_some()) {
            notes.push(format!("credHelpers entry {key:?} ignored: credential helpers are not supported"));
        }
    }
    if let Some(store) = json.get("credsStore").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        notes.push(format!(
            "credsStore {store:?} ignored: credential helpers are not supported; only \"auths\" entries are read"
        ));
    }
    notes
}

/// `identitytoken` wins (Docker then trades it for tokens), then `auth` (base64 `user:pass`),
/// then `username`/`password`, as in Docker; an entry with none yields `None`.
fn decode_entry(key: &str, entry: &Value) -> Result<Option<Credential>, OrasError> {
    let Some(entry) = entry.as_object() else {
        return Err(cred_err(format!("auths entry {key:?} is not a JSON object")));
    };
    let field = |name: &str| entry.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    if let Some(token) = field("identitytoken") {
        // `docker login` with a token stores `auth` as "<user>:" (or nothing) beside it.
        let username = field("auth").and_then(|a| decode_auth(key, a).ok()).map(|c| c.username);
        let username = username.or_else(|| field("username").map(str::to_owned)).unwrap_or_default();
        return Ok(Some(Credential { username, password: String::new(), identity_token: Some(token.to_owned()) }));
    }
    if let Some(auth) = field("auth") {
        return decode_auth(key, auth).map(Some);
    }
    match (field("username"), field("password")) {
        (Some(username), Some(password)) => {
            Ok(Some(Credential { username: username.to_owned(), password: password.to_owned(), identity_token: None }))
        }
        _ => Ok(None),
    }
}

fn decode_auth(key: &str, auth: &str) -> Result<Credential, OrasError> {
    let bytes = LENIENT_BASE64
        .decode(auth.trim())
        .map_err(|_| cred_err(format!("auths entry {key:?}: \"auth\" is not valid base64")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| cred_err(format!("auths entry {key:?}: \"auth\" does not decode to UTF-8 text")))?;
    match text.split_once(':') {
        Some((username, password)) if !username.is_empty() => {
            Ok(Credential { username: username.to_owned(), password: password.to_owned(), identity_token: None })
        }
        _ => Err(cred_err(format!("auths entry {key:?}: \"auth\" does not decode to user:password"))),
    }
}

/// The files to try, in order; the caller reads each that exists and stops at the first that
/// holds a credential for the registry. Empty `DOCKER_CONFIG` counts as unset, like Docker.
pub fn candidate_paths(docker_config_env: Option<&Path>, home: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    match (docker_config_env.filter(|p| !p.as_os_str().is_empty()), home) {
        (Some(dir), _) => paths.push(dir.join("config.json")),
        (None, Some(home)) => paths.push(home.join(".docker").join("config.json")),
        (None, None) => {}
    }
    if let Some(home) = home {
        paths.push(home.join(".singularity").join("docker-config.json"));
        paths.push(home.join(".apptainer").join("docker-config.json"));
    }
    paths
}

/// `Basic base64(user:pass)` for the `Authorization` header.
pub fn basic_header(c: &Credential) -> String {
    format!("Basic {}", STANDARD.encode(format!("{}:{}", c.username, c.password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Some((user, pass)), None, or a substring of the BadCredentials message.
    type Want<'a> = Result<Option<(&'a str, &'a str)>, &'a str>;

    const PASSWORD: &str = "s3cr3t:with:colons";

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    fn cred(username: &str, password: &str) -> Want<'static> {
        // Leaking in tests keeps the table's types simple.
        Ok(Some((String::from(username).leak(), String::from(password).leak())))
    }

    /// `expected`: Some((user, pass)), None, or a substring of the BadCredentials message.
    fn check(config: &str, registry: &str, expected: Want) {
        let got = lookup(config, registry);
        match (&got, expected) {
            (Ok(c), Ok(want)) => {
                let c = c.as_ref().map(|c| (c.username.as_str(), c.password.as_str()));
                assert_eq!(c, want, "{registry} in {config}");
            }
            (Err(e), Err(want)) => {
                assert_eq!(e.kind, OrasErrorKind::BadCredentials, "{config}");
                assert!(e.message.contains(want), "{config}: {:?} lacks {want:?}", e.message);
                assert!(!e.message.contains(PASSWORD) && !e.message.contains("s3cr3t"), "error leaks the secret");
                assert!(!e.message.contains(&b64(&format!("u:{PASSWORD}"))[..8]), "error leaks the encoded secret");
            }
            (got, want) => panic!("{registry} in {config}: got {got:?}, want {want:?}"),
        }
    }

    fn auths(key: &str, entry: &str) -> String {
        format!(r#"{{"auths":{{"{key}":{entry}}}}}"#)
    }

    #[test]
    fn lookups() {
        let auth = format!(r#"{{"auth":"{}"}}"#, b64(&format!("u:{PASSWORD}")));
        let unpadded = format!(r#"{{"auth":"{}"}}"#, b64("ab:c").trim_end_matches('='));
        let fields = format!(r#"{{"username":"u2","password":"{PASSWORD}"}}"#);
        let cases: Vec<(String, &str, Want)> = vec![
            (auths("localhost:5000", &auth), "localhost:5000", cred("u", PASSWORD)),
            (auths("LocalHost:5000", &auth), "localhost:5000", cred("u", PASSWORD)),
            (auths("https://localhost:5000/v1/", &auth), "localhost:5000", cred("u", PASSWORD)),
            (auths("http://localhost:5000", &auth), "localhost:5000", cred("u", PASSWORD)),
            (auths("localhost:5000", &auth), "localhost:5001", Ok(None)),
            (auths("localhost", &auth), "localhost:5000", Ok(None)),
            (auths("ghcr.io", &auth), "ghcr.io", cred("u", PASSWORD)),
            (auths("ghcr.io", &fields), "ghcr.io", cred("u2", PASSWORD)),
            (auths("ghcr.io", &unpadded), "ghcr.io", cred("ab", "c")),
            (auths("ghcr.io", r#"{"auth":"dTo="}"#), "ghcr.io", cred("u", "")),
            (auths("https://index.docker.io/v1/", &auth), "registry-1.docker.io", cred("u", PASSWORD)),
            (auths("docker.io", &auth), "registry-1.docker.io", cred("u", PASSWORD)),
            (auths("https://index.docker.io/v1/", &auth), "ghcr.io", Ok(None)),
            (auths("[::1]:5000", &auth), "[::1]:5000", cred("u", PASSWORD)),
            (auths("ghcr.io", r#"{"identitytoken":"tok"}"#), "ghcr.io", cred("", "")),
            (
                auths("ghcr.io", &format!(r#"{{"identitytoken":"tok","auth":"{}"}}"#, b64("me:"))),
                "ghcr.io",
                cred("me", ""),
            ),
            (auths("ghcr.io", "{}"), "ghcr.io", Ok(None)),
            (auths("ghcr.io", r#"{"username":"u"}"#), "ghcr.io", Ok(None)),
            (r#"{"credsStore":"desktop"}"#.to_owned(), "ghcr.io", Ok(None)),
            ("{}".to_owned(), "ghcr.io", Ok(None)),
            // exact key beats a normalised one, whatever the map order
            (
                format!(r#"{{"auths":{{"https://ghcr.io":{{"auth":"{}"}},"ghcr.io":{auth}}}}}"#, b64("other:x")),
                "ghcr.io",
                cred("u", PASSWORD),
            ),
            // an empty entry does not hide a usable one further down
            (format!(r#"{{"auths":{{"ghcr.io":{{}},"https://ghcr.io/v1/":{auth}}}}}"#), "ghcr.io", cred("u", PASSWORD)),
            (
                auths("ghcr.io", &format!(r#"{{"auth":"{PASSWORD}!!"}}"#)),
                "ghcr.io",
                Err("auths entry \"ghcr.io\": \"auth\" is not valid base64"),
            ),
            (auths("ghcr.io", &format!(r#"{{"auth":"{}"}}"#, b64("nocolon"))), "ghcr.io", Err("user:password")),
            (
                auths("ghcr.io", &format!(r#"{{"auth":"{}"}}"#, b64(&format!(":{PASSWORD}")))),
                "ghcr.io",
                Err("user:password"),
            ),
            (
                auths("ghcr.io", &format!(r#"{{"auth":"{}"}}"#, STANDARD.encode([0xff, b':', 0xfe]))),
                "ghcr.io",
                Err("UTF-8"),
            ),
            (auths("ghcr.io", &format!(r#""{PASSWORD}""#)), "ghcr.io", Err("not a JSON object")),
            (format!(r#"{{"auths":{{"ghcr.io":{{"password":"{PASSWORD}""#), "ghcr.io", Err("not valid JSON (line 1")),
            (format!(r#"{{"auths":{{"ghcr.io":{{"auth":{PASSWORD}}}}}}}"#), "ghcr.io", Err("not valid JSON")),
        ];
        for (config, registry, expected) in &cases {
            check(config, registry, *expected);
        }
        check(&" ".repeat(MAX_CONFIG_BYTES + 1), "ghcr.io", Err("limit 1048576"));
    }

    #[test]
    fn notes() {
        let check_notes = |config: &str, registry: &str, want: &[&str]| {
            let got = lookup_with_notes(config, registry).unwrap().notes;
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (note, w) in got.iter().zip(want) {
                assert!(note.contains(w), "{note:?} lacks {w:?}");
                assert!(!note.contains("tok123"), "note leaks the token");
            }
        };
        check_notes(&auths("ghcr.io", r#"{"identitytoken":"tok123"}"#), "ghcr.io", &[]);
        let got = lookup(&auths("ghcr.io", r#"{"identitytoken":"tok123"}"#), "ghcr.io").unwrap().unwrap();
        assert_eq!(got.identity_token.as_deref(), Some("tok123"));
        assert!(!format!("{got:?}").contains("tok123"), "Debug leaks the identity token");
        check_notes(
            r#"{"credsStore":"desktop","credHelpers":{"ghcr.io":"gh","quay.io":"q"}}"#,
            "ghcr.io",
            &["credHelpers entry \"ghcr.io\"", "credsStore \"desktop\""],
        );
    }

    #[test]
    fn debug_hides_password() {
        let c = Credential { username: "alice".to_owned(), password: PASSWORD.to_owned(), identity_token: None };
        let shown = format!("{c:?} {:?}", Lookup { credential: Some(c.clone()), notes: vec![] });
        assert!(shown.contains("alice") && !shown.contains("s3cr3t"), "{shown}");
        assert_eq!(basic_header(&c), format!("Basic {}", b64(&format!("alice:{PASSWORD}"))));
        let c = Credential { username: "aladdin".to_owned(), password: "opensesame".to_owned(), identity_token: None };
        assert_eq!(basic_header(&c), "Basic YWxhZGRpbjpvcGVuc2VzYW1l");
    }

    #[test]
    fn paths() {
        let check = |env: Option<&str>, home: Option<&str>, want: &[&str]| {
            let got = candidate_paths(env.map(Path::new), home.map(Path::new));
            let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
            assert_eq!(got, want, "env={env:?} home={home:?}");
        };
        check(
            None,
            Some("/home/u"),
            &[
                "/home/u/.docker/config.json",
                "/home/u/.singularity/docker-config.json",
                "/home/u/.apptainer/docker-config.json",
            ],
        );
        check(
            Some("/etc/dc"),
            Some("/home/u"),
            &[
                "/etc/dc/config.json",
                "/home/u/.singularity/docker-config.json",
                "/home/u/.apptainer/docker-config.json",
            ],
        );
        check(
            Some(""),
            Some("/home/u"),
            &[
                "/home/u/.docker/config.json",
                "/home/u/.singularity/docker-config.json",
                "/home/u/.apptainer/docker-config.json",
            ],
        );
        check(Some("/etc/dc"), None, &["/etc/dc/config.json"]);
        check(None, None, &[]);
    }
}
