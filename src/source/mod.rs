//! Sources: how a task's bytes are fetched, per URL scheme. `http(s)://` is a plain GET with the
//! request's headers; `oras://` first resolves a registry manifest to one SIF blob, then fetches the
//! blob like any HTTP content, with registry auth attached and refreshed on 401.
//!
//! Invariant: a `Fetch` is all a piece worker needs — it never parses the original URL again, so
//! every core fetches pieces the same way the home core resolved them.

pub mod oras;

use std::sync::Arc;

use url::Url;

use crate::error::Result;
use crate::http::client::{self, Options, Response};

/// How to GET the task's content: URL, headers, transport options, and registry auth if any.
#[derive(Clone)]
pub struct Fetch {
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub opts: Options,
    pub auth: Option<Arc<oras::registry::RegistryAuth>>,
}

impl Fetch {
    /// GET the content, or the inclusive byte `range` of it; `if_range` (the first response's
    /// validator) makes the range conditional on the content being unchanged.
    pub async fn get(&self, range: Option<(u64, u64)>, if_range: Option<&str>) -> Result<Response> {
        let headers: std::borrow::Cow<'_, [(String, String)]> = match if_range {
            None => std::borrow::Cow::Borrowed(&self.headers),
            Some(v) => {
                let mut all = self.headers.clone();
                all.push(("If-Range".to_string(), v.to_string()));
                std::borrow::Cow::Owned(all)
            }
        };
        match &self.auth {
            None => client::get(&self.url, &headers, range, &self.opts).await,
            Some(auth) => auth.get(&self.url, &headers, range, &self.opts).await,
        }
    }
}

/// Which registry credential an `oras://` request uses.
pub enum RegistryCredential {
    /// The requester's own (read by the client from the caller's config), or none.
    Given(Option<oras::creds::Credential>),
    /// Given, else this process's own docker config: the client itself, or the daemon for root.
    GivenOrOwn(Option<oras::creds::Credential>),
}

/// Resolves an `oras://` URL to a `Fetch` of its SIF blob plus the layer it must match. A digest the
/// user gave must be that layer's. Shared by the daemon and the client's back-to-source path.
pub async fn oras_fetch(
    url: &str,
    headers: &[(String, String)],
    opts: &Options,
    insecure_registries: &[String],
    user_digest: Option<&crate::digest::Digest>,
    credential: RegistryCredential,
    platform: Option<&str>,
) -> Result<(Fetch, oras::manifest::Layer)> {
    use crate::error::Error;
    let reference = oras::reference::Reference::parse(url).map_err(|e| Error::client(e.to_string()))?;
    let credential = match credential {
        RegistryCredential::Given(c) => c,
        RegistryCredential::GivenOrOwn(c) => c.or_else(|| oras::registry::load_credential(&reference.registry)),
    };
    let platform = match platform {
        Some(p) => oras::platform::Platform::parse(p).map_err(|e| Error::client(e.message))?,
        None => oras::platform::Platform::host(),
    };
    let resolved = oras::registry::resolve(&reference, opts, insecure_registries, credential, &platform).await?;
    if let Some(d) = user_digest.filter(|d| **d != resolved.layer.digest) {
        return Err(Error::client(format!("--digest {d} does not match the image layer {}", resolved.layer.digest)));
    }
    let fetch =
        Fetch { url: resolved.blob_url, headers: headers.to_vec(), opts: opts.clone(), auth: Some(resolved.auth) };
    Ok((fetch, resolved.layer))
}
