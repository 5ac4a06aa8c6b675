//! `oras://` pulls from registries serving https with certificates the tests make (openssl):
//! self-signed with the seed page's `insecureSkipVerify: true` works; verification on without the
//! CA fails with a TLS error naming the registry and leaves no output; the private test CA in
//! `caFile` or `SSL_CERT_FILE` makes verification pass. And a plain-http registry on an address
//! that is not loopback (inside a network namespace the test makes) is refused unless the config
//! lists it in `insecureRegistries`.
//!
//! Invariant: each test starts its own registry and daemons; failures leave no output and a
//! healthy daemon.

mod common;
#[path = "support_registry/mod.rs"]
mod support_registry;

use std::path::Path;
use std::process::Output;

use support_registry::*;

/// The shared clean-failure check, plus: nothing left next to OUT (a TLS failure happens before
/// any temp file could exist, so there must be none).
fn assert_failed_cleanly(daemon: &OrasDaemon, result: &Output, out: &Path, needles: &[&str]) -> String {
    let stderr = support_registry::assert_failed_cleanly(daemon, result, out, needles);
    assert_eq!(dir_entries(out.parent().expect("parent")), Vec::<String>::new(), "files left next to OUT");
    stderr
}

/// A distribution v3 registry serving https with `certs`, holding one SIF pushed by the oras CLI
/// (which trusts the certificate through `--ca-file`).
fn tls_registry_with_image(certs: &TestCerts, body: &[u8]) -> Registry {
    let registry = Registry::start_with(RegistryOpts {
        kind: Kind::DistributionV3,
        tls: Some(certs.server()),
        ..RegistryOpts::default()
    });
    let cli = OrasCli { host: registry.host(), credentials: None, transport: Transport::CaFile(certs.ca()) };
    cli.push("test/tls:v1", body, &[]);
    registry
}

#[test]
fn self_signed_registry_pulls_with_the_seed_config_insecure_skip_verify_true() {
    let certs = TestCerts::self_signed(&["127.0.0.1"]);
    let body = content(5 * MIB + 11, 21);
    let registry = tls_registry_with_image(&certs, &body);
    // The seed page's block verbatim: `insecureSkipVerify: true`.
    let daemon = OrasDaemon::start(DaemonOpts { seed_config: true, ..DaemonOpts::default() });
    let dir = temp_dir("tls-out-");
    let out = dir.path().join("img.sif");
    assert_pulled(&daemon.download(&registry.oras_url("test/tls:v1"), &out), &out, &body, "self-signed, skip verify");
    // The registry speaks only https, so every request it logged came over TLS.
    let manifest_gets = parse_gets(&registry, "/manifests/v1");
    assert!(manifest_gets > 0, "the registry logged no manifest GET:\n{}", registry.log());
}

fn parse_gets(registry: &Registry, suffix: &str) -> usize {
    registry.log().lines().filter(|l| l.contains("response completed") && l.contains(suffix)).count()
}

#[test]
fn verification_on_without_the_ca_fails_with_a_tls_error_naming_the_registry() {
    let certs = TestCerts::self_signed(&["127.0.0.1"]);
    let body = content(KIB, 22);
    let registry = tls_registry_with_image(&certs, &body);
    let daemon = OrasDaemon::start(DaemonOpts {
        oras_yaml: Some("  insecureSkipVerify: false\n".into()),
        ..DaemonOpts::default()
    });
    let dir = temp_dir("tls-out-");
    let out = dir.path().join("img.sif");
    let result = daemon.download(&registry.oras_url("test/tls:v1"), &out);
    let stderr = assert_failed_cleanly(&daemon, &result, &out, &[&registry.host(), "certificate"]);
    assert!(stderr.contains("caFile"), "the error should say how to trust the registry: {stderr}");
}

#[test]
fn private_ca_in_ca_file_or_ssl_cert_file_verifies_the_registry() {
    let certs = TestCerts::private_ca(&["127.0.0.1"]);
    let body = content(6 * MIB + 1, 23);
    let registry = tls_registry_with_image(&certs, &body);
    let dir = temp_dir("tls-out-");
    let url = registry.oras_url("test/tls:v1");

    let ca_file = format!("  insecureSkipVerify: false\n  caFile: {}\n", certs.ca().display());
    let with_ca_file = OrasDaemon::start(DaemonOpts { oras_yaml: Some(ca_file), ..DaemonOpts::default() });
    let out = dir.path().join("ca-file.sif");
    assert_pulled(&with_ca_file.download(&url, &out), &out, &body, "test CA in caFile");

    let with_env = OrasDaemon::start(DaemonOpts {
        oras_yaml: Some("  insecureSkipVerify: false\n".into()),
        daemon_env: vec![("SSL_CERT_FILE".into(), certs.ca().into())],
        ..DaemonOpts::default()
    });
    let out = dir.path().join("ssl-cert-file.sif");
    assert_pulled(&with_env.download(&url, &out), &out, &body, "test CA in SSL_CERT_FILE");

    // The same registry without the CA: refused, so the two pulls above really verified.
    let without = OrasDaemon::start(DaemonOpts {
        oras_yaml: Some("  insecureSkipVerify: false\n".into()),
        daemon_env: vec![("SSL_CERT_FILE".into(), "/nonexistent/ca.pem".into())],
        ..DaemonOpts::default()
    });
    let dir = temp_dir("tls-out-");
    let out = dir.path().join("without.sif");
    let result = without.download(&url, &out);
    assert_failed_cleanly(&without, &result, &out, &[&registry.host(), "certificate"]);
}

#[test]
fn plain_http_registry_on_a_non_loopback_address_is_refused_unless_listed_insecure() {
    let ns = NetNs::create();
    let registry = Registry::start_with(RegistryOpts {
        kind: Kind::DistributionV3,
        netns: Some(ns.name.clone()),
        listen_ip: Some(ns.inner_ip.clone()),
        ..RegistryOpts::default()
    });
    let body = content(4 * MIB + 9, 24);
    OrasCli::plain(&registry.host()).push("test/plain:v1", &body, &[]);
    let url = registry.oras_url("test/plain:v1");
    let dir = temp_dir("tls-out-");

    let strict = OrasDaemon::start(DaemonOpts::default());
    let out = dir.path().join("refused.sif");
    let result = strict.download(&url, &out);
    assert_failed_cleanly(&strict, &result, &out, &[&registry.host(), "insecureRegistries"]);

    let listed = format!("  insecureSkipVerify: true\n  insecureRegistries: ['{}']\n", registry.host());
    let allowed = OrasDaemon::start(DaemonOpts { oras_yaml: Some(listed), ..DaemonOpts::default() });
    let out = dir.path().join("allowed.sif");
    assert_pulled(&allowed.download(&url, &out), &out, &body, "plain http, listed as insecure");
}
