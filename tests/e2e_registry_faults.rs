//! What hosted registries do that the ones we can run do not: blob GETs redirected (307) to an
//! object store with expiring presigned URLs, and 429 rate limits with `Retry-After`. A real
//! registry (docker-registry 2.8) holds the images, pushed by the `oras` CLI; a fault-injecting
//! front (`support_registry::front`, a fake used only for these faults) stands between it and the
//! daemon.
//!
//! Invariant: each test starts its own registry, front and daemon; failures leave no output and
//! a healthy daemon.

mod common;
#[path = "support_registry/mod.rs"]
mod support_registry;

use std::time::Duration;

use support_registry::front::{Front, FrontOpts};
use support_registry::*;

const USER: &str = "e2e-user";
const PASSWORD: &str = "S3cret-pa55word-e2e";

/// A registry (htpasswd when `auth`) holding `body` at `test/img:v1`, pushed by the oras CLI.
fn registry_with(body: &[u8], auth: bool) -> Registry {
    let registry_auth = if auth { RegistryAuth::htpasswd(USER, PASSWORD) } else { RegistryAuth::None };
    let registry = Registry::start(registry_auth);
    let mut cli = OrasCli::plain(&registry.host());
    if auth {
        cli.credentials = Some((USER.into(), PASSWORD.into()));
    }
    cli.push("test/img:v1", body, &[]);
    registry
}

fn daemon_for(front: &Front, extra_yaml: &'static str) -> OrasDaemon {
    OrasDaemon::start(DaemonOpts {
        credentials: vec![(front.host(), USER.into(), PASSWORD.into())],
        extra_yaml,
        ..DaemonOpts::default()
    })
}

#[test]
fn redirected_blob_pieces_are_ranged_at_the_store_and_never_carry_the_registry_authorization() {
    let body = content(20 * MIB + 3, 31);
    let registry = registry_with(&body, true);
    let opts = FrontOpts { redirect_lifetime: Some(Duration::from_secs(600)), ..FrontOpts::default() };
    let front = Front::start(&registry.host(), registry.storage_root(), opts);
    let daemon = daemon_for(&front, "");
    let dir = temp_dir("faults-out-");
    let out = dir.path().join("img.sif");
    assert_pulled(&daemon.download(&front.oras_url("test/img:v1"), &out), &out, &body, "redirected blob");
    let seen = front.seen();
    let store: Vec<_> = seen.iter().filter(|s| s.at == "store").collect();
    let redirects = seen.iter().filter(|s| s.at == "front" && s.status == 307).count();
    assert!(redirects >= 1, "the front redirected no blob GET: {seen:#?}");
    assert!(
        seen.iter().any(|s| s.at == "front" && s.path.contains("/blobs/") && s.authorization),
        "the registry's blob GETs should carry the credentials: {seen:#?}"
    );
    assert!(store.len() > 1 && store.iter().all(|s| s.status == 206 && s.range.is_some()), "{store:#?}");
    assert!(store.iter().all(|s| !s.authorization), "Authorization reached the storage host: {store:#?}");
}

#[test]
fn expired_presigned_url_is_re_resolved_through_the_registry() {
    // 12 pieces at 8 MiB/s (a total limit: the ramp stays at one or two workers, each doubling
    // gains nothing): the later pieces start after about 4 s, when the URL remembered from the first redirects (valid 2 s) has expired.
    let body = content(48 * MIB, 32);
    let registry = registry_with(&body, false);
    let opts = FrontOpts { redirect_lifetime: Some(Duration::from_secs(2)), ..FrontOpts::default() };
    let front = Front::start(&registry.host(), registry.storage_root(), opts);
    let daemon = daemon_for(&front, "download:\n  totalRateLimit: 8Mi\n");
    let dir = temp_dir("faults-out-");
    let out = dir.path().join("img.sif");
    assert_pulled(&daemon.download(&front.oras_url("test/img:v1"), &out), &out, &body, "outliving its URL");
    let seen = front.seen();
    let expired = seen.iter().filter(|s| s.at == "store" && s.status == 403).count();
    let first_redirects = seen.iter().position(|s| s.at == "store").unwrap_or(0);
    let later_redirects = seen[first_redirects..].iter().filter(|s| s.at == "front" && s.status == 307).count();
    assert!(expired >= 1, "no piece met an expired URL, so this proved nothing: {seen:#?}");
    assert!(later_redirects >= 1, "the expired URL was not re-resolved through the registry: {seen:#?}");
}

#[test]
fn rate_limited_manifest_and_blob_requests_are_waited_out() {
    let body = content(6 * MIB + 1, 33);
    let registry = registry_with(&body, false);
    let opts = FrontOpts { manifest_429s: 2, blob_429s: 3, retry_after: Some("1"), ..FrontOpts::default() };
    let front = Front::start(&registry.host(), registry.storage_root(), opts);
    let daemon = daemon_for(&front, "");
    let dir = temp_dir("faults-out-");
    let out = dir.path().join("img.sif");
    assert_pulled(&daemon.download(&front.oras_url("test/img:v1"), &out), &out, &body, "through 429s");
    assert_eq!(front.n_429s(), (2, 3), "the front should have served every 429 it was told to");
}

#[test]
fn rate_limit_without_end_fails_clearly_on_manifests_and_on_blobs() {
    let body = content(KIB, 34);
    let registry = registry_with(&body, false);
    for (what, opts) in [
        ("/manifests/", FrontOpts { manifest_429s: usize::MAX, retry_after: Some("1"), ..FrontOpts::default() }),
        ("/blobs/", FrontOpts { blob_429s: usize::MAX, retry_after: Some("1"), ..FrontOpts::default() }),
    ] {
        let front = Front::start(&registry.host(), registry.storage_root(), opts);
        let daemon = daemon_for(&front, "");
        let dir = temp_dir("faults-out-");
        let out = dir.path().join("img.sif");
        let result = daemon.download(&front.oras_url("test/img:v1"), &out);
        let stderr = assert_failed_cleanly(&daemon, &result, &out, &["rate limited", "429", &front.host()]);
        assert!(stderr.contains(what), "the reason should name the {what} request: {stderr}");
    }
}
