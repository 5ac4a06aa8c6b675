//! Back-to-source without a daemon: when no daemon answers and none can be started, `dfget`
//! fetches the URL itself on a single compio runtime — one stream, no pieces, no cache — into a temp
//! file beside OUT, verifies the digest if one is known, and renames it into place.
//!
//! Invariant: OUT appears only complete and verified; on any failure the temp file is removed.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::http::client::Options;
use crate::proto::DownloadRequest;
use crate::source::Fetch;

pub fn download(req: &DownloadRequest, config: &Config) -> Result<u64> {
    let rt = compio::runtime::Runtime::new().map_err(|e| Error::internal(format!("cannot start a runtime: {e}")))?;
    rt.block_on(fetch_to_file(req, config))
}

async fn fetch_to_file(req: &DownloadRequest, config: &Config) -> Result<u64> {
    let (fetch, digest) = resolve(req, config).await?;
    let out = PathBuf::from(req.output.as_deref().ok_or_else(|| Error::client("no output file to download into"))?);
    let tmp = temp_path(&out);
    let result = stream_into(&fetch, &tmp, digest.as_ref()).await.and_then(|n| {
        std::fs::rename(&tmp, &out).map_err(|e| crate::storage::disk_err(e, &out, "rename into place"))?;
        Ok(n)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

async fn resolve(req: &DownloadRequest, config: &Config) -> Result<(Fetch, Option<Digest>)> {
    let digest = req.digest.as_deref().map(Digest::parse_user).transpose()?;
    if req.url.starts_with("oras://") {
        let opts = Options::from_transport(&config.oras)?;
        let insecure = &config.oras.insecure_registries;
        let (fetch, layer) = crate::source::oras_fetch(
            &req.url,
            &req.headers,
            &opts,
            insecure,
            digest.as_ref(),
            crate::source::RegistryCredential::GivenOrOwn(req.registry_credential.clone()),
            req.platform.as_deref(),
        )
        .await?;
        return Ok((fetch, Some(layer.digest)));
    }
    let url = url::Url::parse(&req.url)
        .map_err(|e| Error::client(format!("invalid URL `{}`: {e}", crate::http::redact::redact_url(&req.url))))?;
    let fetch = Fetch { url, headers: req.headers.clone(), opts: Options::from_transport(&config.http)?, auth: None };
    Ok((fetch, digest))
}

async fn stream_into(fetch: &Fetch, tmp: &Path, digest: Option<&Digest>) -> Result<u64> {
    let mut resp = fetch.get(None, None).await?;
    if resp.status() != 200 {
        let what =
            format!("{} returned {} {}", crate::http::redact::Shown(&fetch.url), resp.status(), resp.head.reason);
        return Err(crate::http::status::error(&resp.head, what));
    }
    let mut file = std::fs::File::create(tmp).map_err(|e| crate::storage::disk_err(e, tmp, "create"))?;
    let mut hasher = Hasher::new();
    let mut buf = Vec::with_capacity(crate::limits::WRITE_CHUNK_BYTES);
    let mut total = 0u64;
    loop {
        let more = resp.read_into(&mut buf, crate::limits::WRITE_CHUNK_BYTES).await?;
        hasher.update(&buf);
        file.write_all(&buf).map_err(|e| crate::storage::disk_err(e, tmp, "write"))?;
        total += buf.len() as u64;
        buf.clear();
        if !more {
            break;
        }
    }
    if let Some(want) = digest {
        hasher.check(want)?;
    }
    Ok(total)
}

fn temp_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!(".{name}.dfget-direct-{}.tmp", uuid::Uuid::new_v4().simple()))
}
