//! End-to-end `oras://` pulls through the real `dfget` binary against a real registry
//! (Debian's docker-registry 2.8.2) filled with oras-py: tags and digests, sizes from 0 bytes to
//! 100 MiB, ranged parallel blob fetches, the cache hit of a second tag, htpasswd and token auth,
//! and the errors users meet (unknown tag, wrong layers, registry down, corrupted blob).
//!
//! Invariant: each test proves the one property its name states with its own registry and
//! daemon; every failing pull must leave no output and no temp file, and a healthy daemon.

mod common;
#[path = "support_registry/mod.rs"]
mod support_registry;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support_registry::*;
use tempfile::TempDir;

const USER: &str = "e2e-user";
const PASSWORD: &str = "S3cret-pa55word-e2e";

fn out_dir() -> TempDir {
    temp_dir("oras-out-")
}

/// Asserts the pull succeeded and `out` holds exactly `expected`; a mismatch names the first
/// differing offset instead of printing megabytes.
fn assert_pulled(result: &Output, out: &Path, expected: &[u8], what: &str) {
    assert!(
        result.status.success(),
        "{what}: dfget failed ({})\nstdout: {}\nstderr: {}",
        result.status,
        String::from_utf8_lossy(&result.stdout),
        stderr_of(result)
    );
    let got = fs::read(out).unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", out.display()));
    if got != expected {
        let first = got.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(got.len().min(expected.len()));
        panic!("{what}: got {} bytes, expected {}, first difference at offset {first}", got.len(), expected.len());
    }
}

/// Asserts a failed pull: the shared ORAS check (non-zero exit, every `needle` in stderr
/// case-insensitively, no output, the daemon still healthy) and the common failure contract
/// (a one-line reason, nothing else in OUT's directory).
fn assert_failed_cleanly(daemon: &OrasDaemon, result: &Output, out: &Path, needles: &[&str]) -> String {
    let stderr = support_registry::assert_failed_cleanly(daemon, result, out, needles);
    common::assert_dfget_failed(result, out);
    stderr
}

/// Lines of a real download (not the cache-hit line, which also contains "peer task done").
fn n_downloads_logged(daemon: &OrasDaemon) -> usize {
    daemon.core_log().lines().filter(|l| l.contains("peer task done") && !l.contains("reuse file")).count()
}

#[test]
fn pull_by_tag_and_by_digest_gives_the_pushed_bytes() {
    let registry = Registry::start(RegistryAuth::None);
    // 0 bytes: docker-registry 2.8.2 accepts the empty blob, so an empty SIF must pull too.
    let sizes = [0, KIB, 10 * MIB];
    let tags: Vec<String> = sizes.iter().map(|len| format!("test/img:size-{len}")).collect();
    let bodies: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &len)| content(len, 10 + i as u64)).collect();
    let specs: Vec<PushSpec> = tags.iter().zip(&bodies).map(|(tag, body)| PushSpec::sif(tag, body)).collect();
    let pushed = push(&registry.host(), PushAuth::Anonymous, &specs);
    // One daemon per kind of reference, so the digest pulls download rather than reuse.
    let by_tag = OrasDaemon::start(DaemonOpts::default());
    let by_digest = OrasDaemon::start(DaemonOpts::default());
    let dir = out_dir();
    for (artifact, body) in pushed.iter().zip(&bodies) {
        let out = dir.path().join(format!("tag-{}.sif", body.len()));
        let result = by_tag.download(&registry.oras_url(&artifact.target), &out);
        assert_pulled(&result, &out, body, &artifact.target);
        let out = dir.path().join(format!("digest-{}.sif", body.len()));
        let reference = artifact.digest_ref();
        let result = by_digest.download(&registry.oras_url(&reference), &out);
        assert_pulled(&result, &out, body, &reference);
    }
    assert_eq!(dir_entries(dir.path()).len(), 2 * sizes.len(), "only the outputs, no temp files");
    assert_eq!(n_downloads_logged(&by_tag), sizes.len(), "{}", by_tag.core_log());
    assert_eq!(n_downloads_logged(&by_digest), sizes.len(), "{}", by_digest.core_log());
}

#[test]
fn pull_of_100_mib_by_tag_and_digest_uses_ranged_requests_from_several_connections() {
    let registry = Registry::start(RegistryAuth::None);
    let body = content(100 * MIB, 100);
    let pushed = push(&registry.host(), PushAuth::Anonymous, &[PushSpec::sif("test/big:v1", &body)]);
    let blob = &pushed[0].layer_digests[0];
    let dir = out_dir();

    let by_tag = OrasDaemon::start(DaemonOpts::default());
    let out = dir.path().join("by-tag.sif");
    assert_pulled(&by_tag.download(&registry.oras_url("test/big:v1"), &out), &out, &body, "100 MiB by tag");
    let gets = registry.blob_gets_covering(blob, body.len() as u64);
    // 206 = the registry honoured a Range header; the remote port tells the TCP connection.
    assert!(gets.len() > 1 && gets.iter().all(|g| g.status == 206), "expected only ranged blob GETs: {gets:#?}");
    let served: u64 = gets.iter().map(|g| g.written_bytes).sum();
    assert_eq!(served, body.len() as u64, "the ranges should cover the blob exactly once: {gets:#?}");
    let connections: BTreeSet<&str> = gets.iter().map(|g| g.remote.as_str()).collect();
    assert!(connections.len() > 1, "all {} ranged GETs came over one connection: {connections:?}", gets.len());

    let by_digest = OrasDaemon::start(DaemonOpts::default());
    let out = dir.path().join("by-digest.sif");
    let reference = pushed[0].digest_ref();
    assert_pulled(&by_digest.download(&registry.oras_url(&reference), &out), &out, &body, "100 MiB by digest");
}

#[test]
fn second_tag_of_same_blob_is_a_cache_hit_linked_from_data_dir_without_blob_get() {
    let registry = Registry::start(RegistryAuth::None);
    let body = content(6 * MIB + 5, 30);
    let pushed = push(
        &registry.host(),
        PushAuth::Anonymous,
        &[PushSpec::sif("test/img:first", &body), PushSpec::sif("test/img:second", &body)],
    );
    let blob = &pushed[0].layer_digests[0];
    let daemon = OrasDaemon::start(DaemonOpts::default());
    let dir = out_dir();
    let first = dir.path().join("first.sif");
    assert_pulled(&daemon.download(&registry.oras_url("test/img:first"), &first), &first, &body, "first tag");
    assert!(daemon.wait_log("peer task done"), "no `peer task done`:\n{}", daemon.diagnostics());
    let gets_before = registry.blob_gets_covering(blob, body.len() as u64);
    let served: u64 = gets_before.iter().map(|g| g.written_bytes).sum();
    assert!(served >= body.len() as u64, "the registry log shows no download of the blob: {gets_before:#?}");

    let second = dir.path().join("second.sif");
    assert_pulled(&daemon.download(&registry.oras_url("test/img:second"), &second), &second, &body, "second tag");
    assert!(daemon.wait_log("reuse file peer task done"), "no cache hit logged:\n{}", daemon.diagnostics());
    assert_eq!(n_downloads_logged(&daemon), 1, "the second tag was downloaded again:\n{}", daemon.core_log());
    let meta = fs::metadata(&second).expect("stat second output");
    let cached = regular_files_under(&daemon.data_dir())
        .into_iter()
        .find(|p| fs::metadata(p).is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev()));
    assert!(cached.is_some() && meta.nlink() >= 2, "second output is not a hard link of a file under dataDir");
    // The registry logs a request right after answering it: give a stray GET time to show up.
    std::thread::sleep(Duration::from_millis(300));
    let gets_after: Vec<BlobRequest> = registry.blob_requests(blob).into_iter().filter(|r| r.method == "GET").collect();
    assert_eq!(gets_after.len(), gets_before.len(), "the cache hit fetched the blob again: {gets_after:#?}");
}

#[test]
fn htpasswd_basic_auth_pulls_with_docker_config_credentials() {
    let registry = Registry::start(RegistryAuth::htpasswd(USER, PASSWORD));
    let body = content(5 * MIB, 40);
    push(&registry.host(), PushAuth::Basic(USER, PASSWORD), &[PushSpec::sif("test/img:v1", &body)]);
    let daemon = OrasDaemon::start(DaemonOpts {
        credentials: vec![(registry.host(), USER.into(), PASSWORD.into())],
        ..DaemonOpts::default()
    });
    let dir = out_dir();
    let out = dir.path().join("img.sif");
    assert_pulled(&daemon.download(&registry.oras_url("test/img:v1"), &out), &out, &body, "htpasswd pull");
}

#[test]
fn htpasswd_wrong_password_is_unauthorized_and_the_password_is_never_shown() {
    let registry = Registry::start(RegistryAuth::htpasswd(USER, PASSWORD));
    let body = content(KIB, 41);
    push(&registry.host(), PushAuth::Basic(USER, PASSWORD), &[PushSpec::sif("test/img:v1", &body)]);
    let wrong = "Wr0ng-pa55word-e2e";
    // Debug logging: the strictest setting for "secrets never reach a log line".
    let daemon = OrasDaemon::start(DaemonOpts {
        credentials: vec![(registry.host(), USER.into(), wrong.into())],
        log_level: Some("debug"),
        ..DaemonOpts::default()
    });
    let dir = out_dir();
    let out = dir.path().join("img.sif");
    let result = daemon.download(&registry.oras_url("test/img:v1"), &out);
    let stderr = assert_failed_cleanly(&daemon, &result, &out, &["unauthorized"]);
    let encoded = base64_of(&format!("{USER}:{wrong}"));
    let daemon_output = daemon.diagnostics();
    for secret in [wrong, encoded.as_str()] {
        assert!(!stderr.contains(secret), "client stderr shows a secret: {stderr}");
        assert!(!daemon_output.contains(secret), "daemon output shows a secret:\n{daemon_output}");
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn bearer_token_anonymous_pull_of_public_repo_works() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let registry = Registry::start(RegistryAuth::token(&tokens));
    let body = content(5 * MIB + 3, 50);
    push(&registry.host(), PushAuth::Token(USER, PASSWORD), &[PushSpec::sif("public/img:v1", &body)]);
    let daemon = OrasDaemon::start(DaemonOpts::default());
    let dir = out_dir();
    let out = dir.path().join("img.sif");
    let n_token_requests = tokens.requests().len();
    assert_pulled(&daemon.download(&registry.oras_url("public/img:v1"), &out), &out, &body, "anonymous public pull");
    let daemon_requests = &tokens.requests()[n_token_requests..];
    assert!(
        !daemon_requests.is_empty() && daemon_requests.iter().all(|r| r.basic_user.is_none() && r.status == 200),
        "the daemon should ask for anonymous tokens: {daemon_requests:#?}"
    );
    assert!(
        daemon_requests.iter().any(|r| r.scopes.iter().any(|s| s == "repository:public/img:pull")),
        "no pull scope for public/img requested: {daemon_requests:#?}"
    );
}

/// A token that expires while the blob is still streaming: the registry answers the later piece
/// requests with 401, and the daemon must fetch a fresh token and carry on (not fail the pull).
#[test]
fn expired_bearer_token_is_refreshed_during_a_long_pull() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let registry = Registry::start(RegistryAuth::token(&tokens));
    let body = content(64 * MIB + 5, 55);
    push(&registry.host(), PushAuth::Token(USER, PASSWORD), &[PushSpec::sif("public/long:v1", &body)]);
    // Tokens that the registry accepts for about 3 s (see set_token_exp_offset).
    tokens.set_token_exp_offset(-57);
    // 17 pieces at 8 MiB/s (a total limit, so the ramp adds no workers that would not pay): the
    // pull takes about 8 s, so the later piece requests carry an expired token.
    let daemon =
        OrasDaemon::start(DaemonOpts { extra_yaml: "download:\n  totalRateLimit: 8Mi\n", ..DaemonOpts::default() });
    let dir = out_dir();
    let out = dir.path().join("long.sif");
    let n_before = tokens.requests().len();
    assert_pulled(
        &daemon.download(&registry.oras_url("public/long:v1"), &out),
        &out,
        &body,
        "pull outliving its token",
    );
    let pulls = tokens.requests()[n_before..]
        .iter()
        .filter(|r| r.status == 200 && r.scopes.iter().any(|s| s == "repository:public/long:pull"))
        .count();
    assert!(pulls >= 2, "the daemon refreshed its token after a 401 ({pulls} token requests)");
}

#[test]
fn bearer_token_private_repo_needs_docker_config_credentials() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let registry = Registry::start(RegistryAuth::token(&tokens));
    let body = content(5 * MIB + 9, 60);
    push(&registry.host(), PushAuth::Token(USER, PASSWORD), &[PushSpec::sif("private/img:v1", &body)]);
    let dir = out_dir();

    let anonymous = OrasDaemon::start(DaemonOpts::default());
    let out = dir.path().join("anonymous.sif");
    let result = anonymous.download(&registry.oras_url("private/img:v1"), &out);
    assert_failed_cleanly(&anonymous, &result, &out, &["unauthorized"]);

    let with_creds = OrasDaemon::start(DaemonOpts {
        credentials: vec![(registry.host(), USER.into(), PASSWORD.into())],
        ..DaemonOpts::default()
    });
    let out = dir.path().join("with-creds.sif");
    let result = with_creds.download(&registry.oras_url("private/img:v1"), &out);
    assert_pulled(&result, &out, &body, "private pull with credentials");
    let basic_users: Vec<Option<String>> = tokens.requests().iter().map(|r| r.basic_user.clone()).collect();
    assert!(basic_users.iter().filter(|u| u.as_deref() == Some(USER)).count() >= 2, "{basic_users:?}");
}

/// A registry holding `specs`, a daemon, and the result of pulling `reference` to a fresh dir.
fn pull_from_fresh_registry(specs: &[PushSpec], reference: &str) -> (Registry, OrasDaemon, TempDir, Output) {
    let registry = Registry::start(RegistryAuth::None);
    push(&registry.host(), PushAuth::Anonymous, specs);
    let daemon = OrasDaemon::start(DaemonOpts::default());
    let dir = out_dir();
    let result = daemon.download(&registry.oras_url(reference), &dir.path().join("img.sif"));
    (registry, daemon, dir, result)
}

#[test]
fn unknown_tag_fails_with_manifest_unknown() {
    let body = content(KIB, 70);
    let (_registry, daemon, dir, result) =
        pull_from_fresh_registry(&[PushSpec::sif("test/img:v1", &body)], "test/img:nope");
    assert_failed_cleanly(&daemon, &result, &dir.path().join("img.sif"), &["manifest unknown", "test/img:nope"]);
}

#[test]
fn manifest_with_two_layers_is_refused() {
    let (a, b) = (content(KIB, 71), content(KIB, 72));
    let spec = PushSpec {
        target: "test/img:two",
        layers: vec![
            Layer { name: "a.sif", bytes: &a, media_type: SIF_LAYER },
            Layer { name: "b.sif", bytes: &b, media_type: SIF_LAYER },
        ],
    };
    let (_registry, daemon, dir, result) = pull_from_fresh_registry(&[spec], "test/img:two");
    assert_failed_cleanly(&daemon, &result, &dir.path().join("img.sif"), &["2 layers"]);
}

#[test]
fn non_sif_layer_is_refused_naming_its_media_type() {
    let tar_type = "application/vnd.oci.image.layer.v1.tar";
    let bytes = content(KIB, 73);
    let spec =
        PushSpec { target: "test/img:tar", layers: vec![Layer { name: "a.tar", bytes: &bytes, media_type: tar_type }] };
    let (_registry, daemon, dir, result) = pull_from_fresh_registry(&[spec], "test/img:tar");
    assert_failed_cleanly(&daemon, &result, &dir.path().join("img.sif"), &[tar_type]);
}

#[test]
fn legacy_sif_layer_media_type_is_accepted() {
    // The media type older Singularity pushed, typo included.
    let legacy = "appliciation/vnd.sylabs.sif.layer.tar";
    let bytes = content(2 * MIB + 1, 74);
    let spec = PushSpec {
        target: "test/img:legacy",
        layers: vec![Layer { name: "img.sif", bytes: &bytes, media_type: legacy }],
    };
    let (_registry, _daemon, dir, result) = pull_from_fresh_registry(&[spec], "test/img:legacy");
    assert_pulled(&result, &dir.path().join("img.sif"), &bytes, "legacy media type");
}

#[test]
fn registry_down_fails_clearly() {
    let daemon = OrasDaemon::start(DaemonOpts::default());
    let dir = out_dir();
    let out = dir.path().join("img.sif");
    let host = format!("127.0.0.1:{}", free_port());
    let result = daemon.download(&format!("oras://{host}/test/img:v1"), &out);
    let stderr = assert_failed_cleanly(&daemon, &result, &out, &[&host]);
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("refused") || lower.contains("connect"),
        "the reason should say it cannot connect: {stderr}"
    );
}

#[test]
fn corrupted_blob_in_registry_storage_fails_with_digest_mismatch_and_is_not_cached() {
    let body = content(5 * MIB, 80);
    let registry = Registry::start(RegistryAuth::None);
    let pushed = push(&registry.host(), PushAuth::Anonymous, &[PushSpec::sif("test/img:v1", &body)]);
    // Flip bytes in the second piece, keeping the size: only the digest can catch it (the
    // filesystem driver serves stored bytes without re-hashing them).
    let data = registry.blob_data_path(&pushed[0].layer_digests[0]);
    let mut stored = fs::read(&data).unwrap_or_else(|e| panic!("read {}: {e}", data.display()));
    assert_eq!(stored.len(), body.len(), "the registry stores the blob as pushed");
    for byte in &mut stored[4 * MIB + 100..4 * MIB + 200] {
        *byte ^= 0xA5;
    }
    fs::write(&data, &stored).expect("corrupt blob");
    let daemon = OrasDaemon::start(DaemonOpts::default());
    let dir = out_dir();
    let out = dir.path().join("img.sif");
    let result = daemon.download(&registry.oras_url("test/img:v1"), &out);
    assert_failed_cleanly(&daemon, &result, &out, &["digest mismatch"]);

    // Once the registry serves the right bytes again, the same pull must download them: the
    // rejected content was not kept as a finished task.
    fs::write(&data, &body).expect("repair blob");
    assert_pulled(&daemon.download(&registry.oras_url("test/img:v1"), &out), &out, &body, "after repair");
    assert_eq!(n_downloads_logged(&daemon), 1, "{}", daemon.core_log());
}

#[test]
fn seed_config_pulls_an_image_and_logs_peer_task_done() {
    let registry = Registry::start(RegistryAuth::None);
    let body = content(3 * MIB, 90);
    push(&registry.host(), PushAuth::Anonymous, &[PushSpec::sif("test/img:seed", &body)]);
    let daemon = OrasDaemon::start(DaemonOpts { seed_config: true, ..DaemonOpts::default() });
    let dir = out_dir();
    let out = dir.path().join("img.sif");
    assert_pulled(&daemon.download(&registry.oras_url("test/img:seed"), &out), &out, &body, "seed config");
    assert!(
        daemon.wait_log("peer task done"),
        "seed's check `grep \"peer task done\"` fails:\n{}",
        daemon.diagnostics()
    );
}
