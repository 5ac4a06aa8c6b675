//! `oras://` pulls against the registries and push clients people use: every registry
//! (Debian's docker-registry 2.8.2, distribution v3 built with `go install`) is filled by both
//! the `oras` CLI (OCI 1.1 manifests: `artifactType`, empty config) and oras-py, and must give
//! the pushed bytes by tag and by digest, anonymously and with htpasswd credentials, and serve a
//! blob shared by two repositories once (the second pull is a cache hit). An OCI index of
//! linux/amd64 and linux/arm64 SIFs (made by `oras manifest index create`) resolves to the
//! host's platform unless `--platform` says otherwise.
//!
//! zot is not in this matrix: the Go module proxy serves no version of `zotregistry.dev/zot`,
//! so it cannot be built here (see README).
//!
//! Invariant: each test starts its own registry and daemons, and every failing pull leaves no
//! output and a healthy daemon.

mod common;
#[path = "support_registry/mod.rs"]
mod support_registry;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support_registry::*;

const USER: &str = "e2e-user";
const PASSWORD: &str = "S3cret-pa55word-e2e";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// The CLI pushed what the issue says it pushes: an OCI 1.1 manifest with `artifactType` and
/// the empty config, and one SIF layer — the shape oras-py does not make.
fn assert_oci_1_1_artifact(manifest: &serde_json::Value) {
    assert!(manifest["artifactType"].as_str().is_some_and(|t| !t.is_empty()), "no artifactType: {manifest}");
    assert_eq!(manifest["config"]["mediaType"], EMPTY_CONFIG, "{manifest}");
    assert_eq!(manifest["layers"][0]["mediaType"], SIF_LAYER, "{manifest}");
}

/// Downloads (not cache hits) in the daemon's log.
fn n_downloads_logged(daemon: &OrasDaemon) -> usize {
    daemon.core_log().lines().filter(|l| l.contains("peer task done") && !l.contains("reuse file")).count()
}

/// Pushes one image with each client and pulls both by tag and by digest, each kind of reference
/// on its own daemon so that the digest pulls download rather than reuse.
fn pull_both_clients_by_tag_and_digest(kind: Kind, auth: Option<(&str, &str)>) {
    let registry_auth = auth.map_or(RegistryAuth::None, |(u, p)| RegistryAuth::htpasswd(u, p));
    let registry = Registry::start_with(RegistryOpts { kind, auth: registry_auth, ..RegistryOpts::default() });
    let (cli_body, py_body) = (content(6 * MIB + 7, 1), content(5 * MIB + 3, 2));
    let mut cli = OrasCli::plain(&registry.host());
    cli.credentials = auth.map(|(u, p)| (u.to_string(), p.to_string()));
    let by_cli = cli.push("test/cli:v1", &cli_body, &[]);
    assert_oci_1_1_artifact(&by_cli.manifest);
    let py_auth = auth.map_or(PushAuth::Anonymous, |(u, p)| PushAuth::Basic(u, p));
    let by_py = push(&registry.host(), py_auth, &[PushSpec::sif("test/py:v1", &py_body)]).remove(0);
    let credentials: Vec<(String, String, String)> =
        auth.iter().map(|(u, p)| (registry.host(), u.to_string(), p.to_string())).collect();
    let opts = || DaemonOpts { credentials: credentials.clone(), ..DaemonOpts::default() };
    let (by_tag, by_digest) = (OrasDaemon::start(opts()), OrasDaemon::start(opts()));
    let dir = temp_dir("registries-out-");
    for (pushed, body, client) in [(&by_cli.pushed, &cli_body, "oras CLI"), (&by_py, &py_body, "oras-py")] {
        let out = dir.path().join(format!("{client}-tag.sif"));
        let what = format!("{kind:?}: {client} push, pulled by tag");
        assert_pulled(&by_tag.download(&registry.oras_url(&pushed.target), &out), &out, body, &what);
        let out = dir.path().join(format!("{client}-digest.sif"));
        let what = format!("{kind:?}: {client} push, pulled by digest");
        assert_pulled(&by_digest.download(&registry.oras_url(&pushed.digest_ref()), &out), &out, body, &what);
    }
    assert_eq!(n_downloads_logged(&by_tag), 2, "{}", by_tag.core_log());
    assert_eq!(n_downloads_logged(&by_digest), 2, "{}", by_digest.core_log());
    if auth.is_some() {
        let anonymous = OrasDaemon::start(DaemonOpts::default());
        let out = dir.path().join("anonymous.sif");
        let result = anonymous.download(&registry.oras_url(&by_cli.pushed.target), &out);
        assert_failed_cleanly(&anonymous, &result, &out, &["unauthorized"]);
    }
}

/// The same SIF pushed to two repositories (once by each client): the second pull is a cache
/// hit — a link, logged as reuse — and the registry serves the blob no second time.
fn shared_blob_is_a_cache_hit(kind: Kind) {
    let registry = Registry::start_with(RegistryOpts { kind, ..RegistryOpts::default() });
    let body = content(6 * MIB + 5, 3);
    let first = OrasCli::plain(&registry.host()).push("team-a/img:v1", &body, &[]).pushed;
    push(&registry.host(), PushAuth::Anonymous, &[PushSpec::sif("team-b/img:v2", &body)]);
    let blob = &first.layer_digests[0];
    let daemon = OrasDaemon::start(DaemonOpts::default());
    let dir = temp_dir("registries-out-");
    let out = dir.path().join("a.sif");
    assert_pulled(&daemon.download(&registry.oras_url("team-a/img:v1"), &out), &out, &body, "first repository");
    let gets_before = registry.blob_gets_covering(blob, body.len() as u64);
    let served: u64 = gets_before.iter().map(|g| g.written_bytes).sum();
    assert!(served >= body.len() as u64, "{kind:?}: the registry log shows no blob download: {gets_before:#?}");
    let out = dir.path().join("b.sif");
    assert_pulled(&daemon.download(&registry.oras_url("team-b/img:v2"), &out), &out, &body, "second repository");
    assert!(daemon.wait_log("reuse file peer task done"), "no cache hit logged:\n{}", daemon.diagnostics());
    assert_eq!(n_downloads_logged(&daemon), 1, "the shared blob was downloaded twice:\n{}", daemon.core_log());
    std::thread::sleep(Duration::from_millis(300));
    let gets_after = registry.blob_requests(blob).into_iter().filter(|r| r.method == "GET").count();
    assert_eq!(gets_after, gets_before.len(), "{kind:?}: the cache hit fetched the blob again");
}

#[test]
fn docker_registry_2_8_anonymous_pulls_of_oras_cli_and_oras_py_pushes_by_tag_and_digest() {
    pull_both_clients_by_tag_and_digest(Kind::DockerRegistry28, None);
}

#[test]
fn docker_registry_2_8_htpasswd_pulls_need_the_docker_config_credentials() {
    pull_both_clients_by_tag_and_digest(Kind::DockerRegistry28, Some((USER, PASSWORD)));
}

#[test]
fn docker_registry_2_8_blob_shared_by_two_repositories_is_a_cache_hit() {
    shared_blob_is_a_cache_hit(Kind::DockerRegistry28);
}

#[test]
fn distribution_v3_anonymous_pulls_of_oras_cli_and_oras_py_pushes_by_tag_and_digest() {
    pull_both_clients_by_tag_and_digest(Kind::DistributionV3, None);
}

#[test]
fn distribution_v3_htpasswd_pulls_need_the_docker_config_credentials() {
    pull_both_clients_by_tag_and_digest(Kind::DistributionV3, Some((USER, PASSWORD)));
}

#[test]
fn distribution_v3_blob_shared_by_two_repositories_is_a_cache_hit() {
    shared_blob_is_a_cache_hit(Kind::DistributionV3);
}

/// `dfget -u URL -O OUT --platform P` through `daemon`.
fn pull_platform(daemon: &OrasDaemon, url: &str, out: &Path, platform: &str) -> Output {
    let out = out.to_str().expect("UTF-8 temp path");
    daemon.dfget(&["-u", url, "-O", out, "--platform", platform])
}

/// An OCI index made by `oras manifest index create` from two SIF manifests pushed with
/// `--artifact-platform linux/amd64` and `linux/arm64`: the host's architecture is picked,
/// `--platform` overrides it, and an index without the wanted platform fails naming what it has.
#[test]
fn multi_arch_index_picks_the_host_platform_and_platform_flag_overrides() {
    let registry = Registry::start_with(RegistryOpts { kind: Kind::DistributionV3, ..RegistryOpts::default() });
    let cli = OrasCli::plain(&registry.host());
    let (amd64, arm64) = (content(2 * MIB + 1, 5), content(3 * MIB + 2, 6));
    cli.push("test/multi:amd64", &amd64, &["--artifact-platform", "linux/amd64"]);
    cli.push("test/multi:arm64", &arm64, &["--artifact-platform", "linux/arm64"]);
    cli.index("test/multi:v1", &["amd64", "arm64"]);
    cli.index("test/multi:arm-only", &["arm64"]);
    let (host_body, host_name) = if cfg!(target_arch = "aarch64") { (&arm64, "arm64") } else { (&amd64, "amd64") };
    let daemon = OrasDaemon::start(DaemonOpts::default());
    let dir = temp_dir("registries-out-");
    let url = registry.oras_url("test/multi:v1");

    let out = dir.path().join("host.sif");
    assert_pulled(&daemon.download(&url, &out), &out, host_body, "index, host platform");
    let out = dir.path().join("arm64.sif");
    assert_pulled(&pull_platform(&daemon, &url, &out, "linux/arm64"), &out, &arm64, "--platform linux/arm64");
    let out = dir.path().join("amd64.sif");
    assert_pulled(&pull_platform(&daemon, &url, &out, "linux/amd64"), &out, &amd64, "--platform linux/amd64");

    let failed = temp_dir("registries-failed-");
    let out = failed.path().join("riscv.sif");
    let result = pull_platform(&daemon, &url, &out, "linux/riscv64");
    assert_failed_cleanly(&daemon, &result, &out, &["no linux/riscv64 manifest", "linux/amd64", "linux/arm64"]);
    if host_name == "amd64" {
        let out = failed.path().join("arm-only.sif");
        let result = daemon.download(&registry.oras_url("test/multi:arm-only"), &out);
        assert_failed_cleanly(&daemon, &result, &out, &["no linux/amd64 manifest", "linux/arm64", "--platform"]);
    }
    let out = failed.path().join("bad.sif");
    let result = pull_platform(&daemon, &url, &out, "linux");
    assert_eq!(result.status.code(), Some(2), "a malformed --platform is a usage error: {}", stderr_of(&result));
    assert!(!out.exists());
}
