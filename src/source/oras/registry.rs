//! Talking to an OCI registry: resolve a reference to its SIF layer (manifest, index → the child
//! for the wanted platform, digest checks), and the state every core's piece workers share for
//! the blob: auth and the storage URL the registry redirected the blob to.
//!
//! Auth follows the challenge: a 401 with `WWW-Authenticate: Bearer realm=..` → a token from the
//! realm (Basic credentials only when we have them), `Basic` → Basic. A later 401 refreshes. A 429
//! is waited out as `Retry-After` asks, within `ratelimit`'s bounds. A blob GET redirected to
//! another host (presigned object-storage URL) is remembered, so later pieces go straight there
//! without `Authorization`; when the storage refuses it (401/403: expired), the next request goes
//! through the registry for a fresh URL. Both values are shared across cores behind std `Mutex`es
//! held only to clone or replace them, never across an await.
//!
//! Invariant: secrets (passwords, tokens) never enter an error message or a log line, and
//! `Authorization` never follows a redirect to another host (the HTTP client drops it).

use std::sync::{Arc, Mutex};

use url::Url;

use super::auth::{self, Challenge};
use super::creds::{self, Credential};
use super::manifest::{self, Layer, Parsed};
use super::platform::Platform;
use super::ratelimit::{self, Decision};
use super::reference::Reference;
use crate::error::{Error, Kind, Result};
use crate::http::client::{self, Options, Response};

pub struct RegistryAuth {
    registry: String,
    repository: String,
    credential: Option<Credential>,
    header: Mutex<Option<String>>,
    /// (blob URL, the storage URL it last redirected to): later pieces go straight there.
    redirect: Mutex<Option<(Url, Url)>>,
}

impl RegistryAuth {
    pub fn new(reference: &Reference, credential: Option<Credential>) -> RegistryAuth {
        RegistryAuth {
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            credential,
            header: Mutex::new(None),
            redirect: Mutex::new(None),
        }
    }

    fn current(&self) -> Option<String> {
        self.header.lock().ok().and_then(|h| h.clone())
    }

    /// GET with the current Authorization; on 401, answer the challenge once and retry; on 429,
    /// wait as the registry asks, within `ratelimit`'s bounds.
    pub async fn get(
        &self,
        url: &Url,
        headers: &[(String, String)],
        range: Option<(u64, u64)>,
        opts: &Options,
    ) -> Result<Response> {
        let mut answered = false;
        let mut n_waited = 0;
        loop {
            let resp = self.send(url, headers, range, opts).await?;
            match resp.status() {
                401 if !answered => {
                    let challenge = resp.head.header_str("www-authenticate").map(str::to_string);
                    resp.discard(crate::limits::MAX_ERROR_BODY_BYTES).await;
                    self.answer(challenge.as_deref(), opts).await?;
                    answered = true;
                }
                401 => return Err(self.unauthorized()),
                429 => {
                    let asked = crate::http::status::retry_after(&resp.head);
                    resp.discard(crate::limits::MAX_ERROR_BODY_BYTES).await;
                    match ratelimit::decide(n_waited, asked) {
                        Decision::Wait(wait) => {
                            tracing::info!(registry = %self.registry, "rate limited (429): waiting {wait:?} as asked");
                            compio::time::sleep(wait).await;
                            n_waited += 1;
                        }
                        Decision::GiveUp { asked } => return Err(self.rate_limited(url, n_waited, asked)),
                    }
                }
                _ => return Ok(resp),
            }
        }
    }

    /// One GET: straight to the storage URL a blob GET was last redirected to, if any (no
    /// `Authorization`: it is the registry's, and presigned URLs carry their own); else to the
    /// registry with the current `Authorization`. Storage refusing a remembered URL (401/403:
    /// a presigned URL past its expiry) sends the request through the registry again, which
    /// hands out a fresh one.
    async fn send(
        &self,
        url: &Url,
        headers: &[(String, String)],
        range: Option<(u64, u64)>,
        opts: &Options,
    ) -> Result<Response> {
        if let Some(target) = self.remembered_redirect(url) {
            let resp = client::get(&target, headers, range, opts).await?;
            if !matches!(resp.status(), 401 | 403) {
                return Ok(resp);
            }
            tracing::info!(registry = %self.registry, status = resp.status(),
                "blob storage refused a redirect URL (expired?): asking the registry for a new one");
            resp.discard(crate::limits::MAX_ERROR_BODY_BYTES).await;
            self.forget_redirect();
        }
        let mut all = headers.to_vec();
        if let Some(h) = self.current() {
            all.push(("Authorization".into(), h));
        }
        let resp = client::get(url, &all, range, opts).await?;
        let redirected = resp.url.origin() != url.origin();
        if redirected && url.path().contains("/blobs/") && (200..300).contains(&resp.status()) {
            if let Ok(mut r) = self.redirect.lock() {
                *r = Some((url.clone(), resp.url.clone()));
            }
        }
        Ok(resp)
    }

    fn remembered_redirect(&self, url: &Url) -> Option<Url> {
        let r = self.redirect.lock().ok()?;
        r.as_ref().filter(|(from, _)| from == url).map(|(_, to)| to.clone())
    }

    fn forget_redirect(&self) {
        if let Ok(mut r) = self.redirect.lock() {
            *r = None;
        }
    }

    fn rate_limited(&self, url: &Url, n_waited: usize, asked: Option<std::time::Duration>) -> Error {
        let asked = asked.map_or_else(|| "without a usable Retry-After".to_string(), |d| format!("asking for {d:?}"));
        Error::origin(
            false,
            format!(
                "{}: rate limited by the registry (429 {asked}) on {} after {n_waited} waits; try again later",
                self.registry,
                url.path()
            ),
        )
        .with_kind(Kind::Status(429))
    }

    fn unauthorized(&self) -> Error {
        let hint = if self.credential.is_some() {
            "the registry rejected the credentials from the docker config"
        } else {
            "no credentials for this registry (add them to ~/.docker/config.json, e.g. with `docker login`)"
        };
        Error::origin(false, format!("unauthorized: {}/{}: {hint}", self.registry, self.repository))
            .with_kind(Kind::Status(401))
    }

    async fn answer(&self, challenge: Option<&str>, opts: &Options) -> Result<()> {
        let challenge = challenge.ok_or_else(|| {
            Error::origin(false, format!("{}: 401 without WWW-Authenticate", self.registry))
                .with_kind(Kind::Status(401))
        })?;
        let parsed = auth::parse_www_authenticate(challenge)
            .map_err(|e| Error::origin(false, format!("{}: {e}", self.registry)))?;
        let header = match parsed {
            Challenge::Basic { .. } => match &self.credential {
                Some(c) => creds::basic_header(c),
                None => return Err(self.unauthorized()),
            },
            Challenge::Bearer { realm, service, scope } => {
                let scope = scope.unwrap_or_else(|| auth::pull_scope(&self.repository));
                self.fetch_token(&realm, service.as_deref(), &scope, opts).await?
            }
        };
        if let Ok(mut h) = self.header.lock() {
            *h = Some(header);
        }
        Ok(())
    }

    /// A token from the realm: with an identity token (docker config `identitytoken`), an OAuth2
    /// refresh-token grant by POST, as Docker and oras-go send it; else a GET with the service and
    /// scopes in the query and Basic credentials when there are any.
    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str, opts: &Options) -> Result<String> {
        let bad_realm = |e: url::ParseError| Error::origin(false, format!("{}: bad token realm: {e}", self.registry));
        let identity_token = self.credential.as_ref().and_then(|c| c.identity_token.as_deref());
        let (url, resp) = match identity_token {
            Some(refresh_token) => {
                let url = Url::parse(realm).map_err(bad_realm)?;
                let form = auth::refresh_token_form(service, scope, refresh_token);
                let resp = client::post_form(&url, &[], &form, opts).await?;
                (url, resp)
            }
            None => {
                let url = Url::parse(&auth::token_url(realm, service, scope)).map_err(bad_realm)?;
                let headers: Vec<(String, String)> =
                    self.credential.iter().map(|c| ("Authorization".to_string(), creds::basic_header(c))).collect();
                let resp = client::get(&url, &headers, None, opts).await?;
                (url, resp)
            }
        };
        match resp.status() {
            200 => {}
            401 | 403 => return Err(self.unauthorized()),
            s => {
                let what = format!("token service {} answered {s}", url.host_str().unwrap_or(""));
                return Err(crate::http::status::error(&resp.head, what));
            }
        }
        let body = read_all(resp, auth::MAX_TOKEN_RESPONSE_BYTES).await?;
        let token =
            auth::parse_token_response(&body).map_err(|e| Error::origin(false, format!("{}: {e}", self.registry)))?;
        Ok(auth::bearer_header(&token))
    }
}

/// What a reference resolved to: the blob to fetch, and how.
pub struct Resolved {
    pub layer: Layer,
    pub blob_url: Url,
    pub auth: Arc<RegistryAuth>,
}

/// Resolves `reference` to its one SIF layer with `credential` (the requester's). https first; for
/// loopback and `insecure` registries, plain http when the TLS handshake fails
/// (go-containerregistry's behaviour).
pub async fn resolve(
    reference: &Reference,
    opts: &Options,
    insecure: &[String],
    credential: Option<Credential>,
    platform: &Platform,
) -> Result<Resolved> {
    let auth = Arc::new(RegistryAuth::new(reference, credential));
    let may_fall_back = reference.is_loopback() || insecure.iter().any(|h| h.eq_ignore_ascii_case(&reference.registry));
    let mut base = format!("https://{}", reference.registry);
    let layer = match fetch_layer(reference, &base, &auth, opts, platform).await {
        Err(tls) if may_fall_back && tls.kind == Kind::TlsHandshake => {
            tracing::debug!(registry = %reference.registry, "TLS handshake failed, trying plain http: {tls}");
            base = format!("http://{}", reference.registry);
            if !speaks_plain_http(&base, opts).await {
                return Err(tls);
            }
            fetch_layer(reference, &base, &auth, opts, platform).await?
        }
        Err(e) if e.kind == Kind::TlsHandshake => {
            let plain = speaks_plain_http(&format!("http://{}", reference.registry), opts).await;
            return Err(if plain { plain_http_hint(reference, e) } else { e });
        }
        other => other?,
    };
    let blob_url = Url::parse(&format!("{base}{}", reference.blob_path(&layer.digest)))
        .map_err(|e| Error::internal(format!("blob URL: {e}")))?;
    Ok(Resolved { layer, blob_url, auth })
}

/// Whether `base` (an `http://` URL) is a plain-http registry: `GET /v2/` gets an HTTP answer
/// other than 400. A TLS server answers plain http with 400 (Go, nginx) or not at all; then its
/// TLS error (e.g. an untrusted certificate) is the one to report, not a confusing http failure.
async fn speaks_plain_http(base: &str, opts: &Options) -> bool {
    let Ok(url) = Url::parse(&format!("{base}/v2/")) else { return false };
    match client::get(&url, &[], None, opts).await {
        Ok(resp) => {
            let status = resp.status();
            resp.discard(crate::limits::MAX_ERROR_BODY_BYTES).await;
            status != 400
        }
        Err(_) => false,
    }
}

/// A plain-http registry that is not loopback is used only when the config lists it: say so,
/// since "TLS handshake failed" alone does not tell its user what to do. (No credentials were
/// sent over plain http to find out: the probe is an anonymous `GET /v2/`.)
fn plain_http_hint(reference: &Reference, e: Error) -> Error {
    let registry = &reference.registry;
    let message = format!(
        "{}; {registry} serves plain http: list it in the config's oras.insecureRegistries to allow that \
         (plain http is used unasked only for loopback registries)",
        e.message
    );
    Error { message, ..e }
}

async fn fetch_layer(
    reference: &Reference,
    base: &str,
    auth: &RegistryAuth,
    opts: &Options,
    platform: &Platform,
) -> Result<Layer> {
    let mut path = reference.manifest_path();
    let mut expect_digest = reference.digest.clone();
    for _ in 0..=manifest::MAX_INDEX_DEPTH {
        let (bytes, content_type) = fetch_manifest(reference, base, &path, auth, opts).await?;
        if let Some(d) = &expect_digest {
            manifest::check_digest(&bytes, d.as_str())
                .map_err(|e| oras_err(reference, e).with_kind(Kind::Integrity))?;
        }
        match manifest::parse_for(&bytes, content_type.as_deref(), platform).map_err(|e| oras_err(reference, e))? {
            Parsed::Manifest(layer) => return Ok(layer),
            Parsed::Index { child_digest } => {
                path = reference.manifest_path_for(&child_digest);
                expect_digest = Some(child_digest);
            }
        }
    }
    Err(Error::origin(false, format!("{reference}: image index nested deeper than {}", manifest::MAX_INDEX_DEPTH)))
}

fn oras_err(reference: &Reference, e: super::reference::OrasError) -> Error {
    Error::origin(false, format!("{reference}: {e}"))
}

async fn fetch_manifest(
    reference: &Reference,
    base: &str,
    path: &str,
    auth: &RegistryAuth,
    opts: &Options,
) -> Result<(Vec<u8>, Option<String>)> {
    let url = Url::parse(&format!("{base}{path}")).map_err(|e| Error::internal(format!("manifest URL: {e}")))?;
    let headers = vec![("Accept".to_string(), manifest::MANIFEST_ACCEPT.to_string())];
    let resp = auth.get(&url, &headers, None, opts).await?;
    match resp.status() {
        200 => {}
        404 => {
            return Err(Error::origin(false, format!("{reference}: manifest unknown (404 for {path})"))
                .with_kind(Kind::Status(404)))
        }
        s => {
            return Err(crate::http::status::error(
                &resp.head,
                format!("{reference}: registry answered {s} for {path}"),
            ))
        }
    }
    let content_type =
        resp.head.header_str("content-type").map(|c| c.split(';').next().unwrap_or(c).trim().to_string());
    let bytes = read_all(resp, manifest::MAX_MANIFEST_BYTES).await?;
    Ok((bytes, content_type))
}

/// Reads a whole (small) body, refusing more than `max_bytes`.
pub async fn read_all(mut resp: Response, max_bytes: usize) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while resp.read_into(&mut body, max_bytes + 1).await? {
        if body.len() > max_bytes {
            return Err(Error::origin(
                false,
                format!("{}: response body over {max_bytes} bytes", crate::http::redact::Shown(&resp.url)),
            ));
        }
    }
    if body.len() > max_bytes {
        return Err(Error::origin(
            false,
            format!("{}: response body over {max_bytes} bytes", crate::http::redact::Shown(&resp.url)),
        ));
    }
    Ok(body)
}

/// The first credential found for `registry` in the docker config files of this process's
/// `$DOCKER_CONFIG` / `$HOME`, in Apptainer's order. The client calls it as the caller; the
/// daemon only for root's requests. Unreadable or malformed files are logged (without contents)
/// and skipped.
pub fn load_credential(registry: &str) -> Option<Credential> {
    let docker_config = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    for path in creds::candidate_paths(docker_config.as_deref(), home.as_deref()) {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        match creds::lookup_with_notes(&text, registry) {
            Ok(found) => {
                for note in &found.notes {
                    tracing::info!(file = %path.display(), "{note}");
                }
                if found.credential.is_some() {
                    return found.credential;
                }
            }
            Err(e) => tracing::warn!(file = %path.display(), "skipping docker config: {e}"),
        }
    }
    None
}
