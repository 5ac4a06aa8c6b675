//! Reads a registry's manifest response and says what to fetch next: the one SIF layer of an
//! image manifest, or the child of an index for the wanted platform (the host's, or
//! `--platform`). Pure: bytes in, decision out.
//!
//! Invariant: a returned digest is `sha256:` + 64 lowercase hex (checked, so the IO layer can put
//! it in a path and verify the blob with sha256), and a `Parsed::Manifest` names exactly one layer
//! whose media type is the SIF layer type or Apptainer's legacy typo type — as Apptainer demands.
//! Input is bounded: at most [`MAX_MANIFEST_BYTES`], and deep nesting is an error, never a stack
//! overflow (serde_json stops typed fields at depth 128 and skips unknown ones without recursing;
//! the tests feed 100 000 levels).
//!
//! Types come from `oci-spec` (`ImageManifest`, `ImageIndex`): its `MediaType::Other` keeps
//! unknown and typo media types, its `Digest` rejects malformed digests, and Docker schema-2
//! manifests and manifest lists have the same shape, so it parses those too. Only the "which kind
//! is this" sniff uses a small struct of our own, because it must look at a body before knowing
//! which oci-spec type to ask for. oci-spec requires `schemaVersion` and `config`, which every
//! OCI/Docker-v2 manifest (and oras-py's) carries, so that strictness costs nothing real.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::platform::Platform;
use super::reference::{parse_digest, OrasError, OrasErrorKind};
use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Sent on every manifest GET: docker-registry 2.8 answers 404 to `*/*` for OCI content.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
pub const SIF_LAYER: &str = "application/vnd.sylabs.sif.layer.v1.sif";
/// The misspelt type early Singularity pushed; Apptainer still accepts it, so do we.
pub const SIF_LAYER_LEGACY: &str = "appliciation/vnd.sylabs.sif.layer.tar";
pub const SIF_CONFIG: &str = "application/vnd.sylabs.sif.config.v1+json";
/// distribution (docker-registry) refuses to store manifests above 4 MiB; neither do we read more.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// An index may point at another index; the caller follows at most this many before giving up.
pub const MAX_INDEX_DEPTH: usize = 2;
/// How many platforms an error message lists before eliding the rest.
const MAX_LISTED: usize = 16;
/// serde's messages can quote input; keep them short in our errors.
const MAX_DETAIL_CHARS: usize = 200;

/// What the manifest response means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An image manifest with its single SIF layer: fetch this blob.
    Manifest(Layer),
    /// An index or manifest list: fetch the manifest with this digest next.
    Index { child_digest: Digest },
}

/// The blob to download, with what it must match once downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Manifest,
    Index,
}

/// The fields that tell a manifest from an index, read without committing to either type.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<IgnoredAny>,
    layers: Option<IgnoredAny>,
}

fn err(kind: OrasErrorKind, message: String) -> OrasError {
    OrasError::new(kind, message)
}

fn json_error(what: &str, e: &serde_json::Error) -> OrasError {
    let detail: String = e.to_string().chars().take(MAX_DETAIL_CHARS).collect();
    err(OrasErrorKind::BadManifest, format!("{what} is not valid: {detail}"))
}

/// `parse_for` linux/amd64 (the fuzz targets' and tables' default).
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, OrasError> {
    parse_for(bytes, content_type, &Platform { os: "linux".into(), arch: "amd64".into(), variant: None })
}

/// Parses manifest bytes given the response `Content-Type` (absent or generic: sniffed from the
/// body's `mediaType`, else from the presence of `manifests` or `layers`); an index resolves to
/// its child for `platform`.
pub fn parse_for(bytes: &[u8], content_type: Option<&str>, platform: &Platform) -> Result<Parsed, OrasError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(err(
            OrasErrorKind::BadManifest,
            format!("manifest is {} bytes, limit {MAX_MANIFEST_BYTES}", bytes.len()),
        ));
    }
    match classify(bytes, content_type)? {
        Kind::Manifest => {
            let manifest: ImageManifest =
                serde_json::from_slice(bytes).map_err(|e| json_error("image manifest", &e))?;
            sif_layer(manifest.layers()).map(Parsed::Manifest)
        }
        Kind::Index => {
            let index: ImageIndex = serde_json::from_slice(bytes).map_err(|e| json_error("image index", &e))?;
            platform_child(index.manifests(), platform).map(|child_digest| Parsed::Index { child_digest })
        }
    }
}

fn kind_of_media_type(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Manifest),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// The header decides when it names a manifest type; the body's own `mediaType` must then agree,
/// so a confused or hostile server cannot make us read an index as a manifest or back.
fn classify(bytes: &[u8], content_type: Option<&str>) -> Result<Kind, OrasError> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| json_error("manifest", &e))?;
    if probe.schema_version == Some(1) {
        return Err(err(
            OrasErrorKind::BadManifest,
            "Docker schema 1 manifests are not supported (push the artifact as OCI)".to_owned(),
        ));
    }
    let body_type = probe.media_type.as_deref();
    let header_kind = content_type.map(essence).as_deref().and_then(kind_of_media_type);
    let body_kind = body_type.and_then(kind_of_media_type);
    match (header_kind, body_kind) {
        (Some(h), Some(b)) if h != b => Err(err(
            OrasErrorKind::BadManifest,
            format!(
                "Content-Type {:?} disagrees with the manifest's mediaType {:?}",
                content_type.unwrap_or_default(),
                body_type.unwrap_or_default()
            ),
        )),
        (Some(kind), _) | (None, Some(kind)) => Ok(kind),
        (None, None) => match (probe.manifests.is_some(), probe.layers.is_some()) {
            (true, false) => Ok(Kind::Index),
            (false, true) => Ok(Kind::Manifest),
            _ => Err(err(
                OrasErrorKind::BadManifest,
                format!(
                    "cannot tell a manifest from an index: Content-Type {:?}, mediaType {:?}, and the body has {} of \"manifests\"/\"layers\"",
                    content_type.unwrap_or("(none)"),
                    body_type.unwrap_or("(none)"),
                    if probe.manifests.is_some() { "both" } else { "neither" }
                ),
            )),
        },
    }
}

/// `Application/Foo+JSON; charset=utf-8` → `application/foo+json`.
fn essence(content_type: &str) -> String {
    let main = content_type.split(';').next().unwrap_or_default();
    main.trim().to_ascii_lowercase()
}

/// The descriptor's digest, required to be sha256 (what the downloader can verify).
fn sha256_of(descriptor: &Descriptor, what: &str) -> Result<Digest, OrasError> {
    let digest = descriptor.digest().to_string();
    parse_digest(&digest).map_err(|e| err(OrasErrorKind::BadManifest, format!("{what}: {}", e.message)))
}

fn sif_layer(layers: &[Descriptor]) -> Result<Layer, OrasError> {
    let types: Vec<&str> = layers.iter().map(|l| l.media_type().as_ref()).collect();
    let is_sif = |t: &str| t == SIF_LAYER || t == SIF_LAYER_LEGACY;
    match layers {
        [layer] if is_sif(types[0]) => Ok(Layer {
            digest: sha256_of(layer, "SIF layer digest")?,
            size: layer.size(),
            media_type: types[0].to_owned(),
        }),
        _ => {
            let n = layers.len();
            let listed = list(&types);
            Err(err(
                OrasErrorKind::NoSifLayer,
                format!(
                    "expected one layer of {SIF_LAYER}, found {n} layer{}: [{listed}]",
                    if n == 1 { "" } else { "s" }
                ),
            ))
        }
    }
}

/// `os/arch[/variant]`, or `(no platform)`.
fn platform_name(descriptor: &Descriptor) -> String {
    let Some(p) = descriptor.platform() else {
        return "(no platform)".to_owned();
    };
    match p.variant() {
        Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
        None => format!("{}/{}", p.os(), p.architecture()),
    }
}

/// A child naming `platform` wins; for linux/amd64, else the first child without a platform
/// (which Apptainer treats as amd64); else an error listing what the index offers.
fn platform_child(children: &[Descriptor], platform: &Platform) -> Result<Digest, OrasError> {
    let explicit = children.iter().find(|d| {
        d.platform().as_ref().is_some_and(|p| {
            platform.matches(&p.os().to_string(), &p.architecture().to_string(), p.variant().as_deref())
        })
    });
    let bare = || children.iter().find(|d| d.platform().is_none()).filter(|_| platform.is_linux_amd64());
    match explicit.or_else(bare) {
        Some(child) => sha256_of(child, "index child digest"),
        None => {
            let names: Vec<String> = children.iter().map(platform_name).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            Err(err(
                OrasErrorKind::NoPlatform,
                format!(
                    "index has no {platform} manifest; platforms found: [{}] (choose one with --platform)",
                    list(&names)
                ),
            ))
        }
    }
}

fn list(items: &[&str]) -> String {
    let mut out = items.iter().take(MAX_LISTED).copied().collect::<Vec<_>>().join(", ");
    if items.len() > MAX_LISTED {
        out.push_str(&format!(", ... {} more", items.len() - MAX_LISTED));
    }
    out
}

/// When the reference named a digest, the manifest bytes must hash to it (registries are
/// content-addressed; a mismatch means a broken or lying server).
pub fn check_digest(bytes: &[u8], expected: &str) -> Result<(), OrasError> {
    let expected = parse_digest(expected)?;
    expected.check(&Digest::of(bytes)).map_err(|m| err(OrasErrorKind::DigestMismatch, format!("manifest {m}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parse result, or the error kind plus a substring of its message.
    type Want<'a> = Result<Parsed, (OrasErrorKind, &'a str)>;
    /// (name, bytes, Content-Type, expected)
    type Case<'a> = (&'a str, &'a [u8], Option<&'a str>, Want<'a>);

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const EMPTY_JSON: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn layer_json(media_type: &str, digest: &str) -> String {
        format!(
            r#"{{"mediaType":"{media_type}","size":1048576,"digest":"{digest}","annotations":{{"org.opencontainers.image.title":"img.sif"}}}}"#
        )
    }

    /// Shaped like what oras-py pushes for `files=["img.sif:<SIF_LAYER>"]` with a `{}` config.
    fn manifest_json(top_media_type: Option<&str>, layers: &[String]) -> String {
        let media = top_media_type.map(|m| format!(r#""mediaType":"{m}","#)).unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{media}"config":{{"mediaType":"{SIF_CONFIG}","size":2,"digest":"{EMPTY_JSON}"}},"layers":[{}],"annotations":{{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}}}}"#,
            layers.join(",")
        )
    }

    fn child_json(digest: &str, platform: Option<(&str, &str)>) -> String {
        let platform = platform
            .map(|(os, arch)| format!(r#","platform":{{"architecture":"{arch}","os":"{os}"}}"#))
            .unwrap_or_default();
        format!(r#"{{"mediaType":"{OCI_MANIFEST}","size":500,"digest":"{digest}"{platform}}}"#)
    }

    fn index_json(media_type: &str, children: &[String]) -> String {
        format!(r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[{}]}}"#, children.join(","))
    }

    fn sif(digest: &str, media_type: &str) -> Want<'static> {
        Ok(Parsed::Manifest(Layer {
            digest: Digest::parse_strict(digest).unwrap(),
            size: 1048576,
            media_type: media_type.to_owned(),
        }))
    }

    fn child(digest: &str) -> Want<'static> {
        Ok(Parsed::Index { child_digest: Digest::parse_strict(digest).unwrap() })
    }

    /// `expected`: the parse result, or the error kind plus a substring of its message.
    fn check(name: &str, bytes: &[u8], content_type: Option<&str>, expected: Want) {
        match (parse(bytes, content_type), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{name}"),
            (Err(e), Err((kind, want))) => {
                assert_eq!(e.kind, kind, "{name}: {}", e.message);
                assert!(e.message.contains(want), "{name}: {:?} lacks {want:?}", e.message);
            }
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn manifests() {
        use OrasErrorKind::*;
        let one_sif = manifest_json(Some(OCI_MANIFEST), &[layer_json(SIF_LAYER, D1)]);
        let no_top_type = manifest_json(None, &[layer_json(SIF_LAYER, D1)]);
        let legacy = manifest_json(Some(OCI_MANIFEST), &[layer_json(SIF_LAYER_LEGACY, D2)]);
        let two =
            manifest_json(Some(OCI_MANIFEST), &[layer_json(SIF_LAYER, D1), layer_json("application/x-other", D2)]);
        let tar = manifest_json(Some(OCI_MANIFEST), &[layer_json("application/vnd.oci.image.layer.v1.tar+gzip", D1)]);
        let zero = manifest_json(Some(OCI_MANIFEST), &[]);
        let docker = manifest_json(
            Some(DOCKER_MANIFEST),
            &[layer_json("application/vnd.docker.image.rootfs.diff.tar.gzip", D1)],
        );
        let md5 = manifest_json(Some(OCI_MANIFEST), &[layer_json(SIF_LAYER, "md5:0123")]);
        let sha512 = format!("sha512:{}", "a".repeat(128));
        let sha512 = manifest_json(Some(OCI_MANIFEST), &[layer_json(SIF_LAYER, &sha512)]);
        let traversal = manifest_json(Some(OCI_MANIFEST), &[layer_json(SIF_LAYER, "../../etc:passwd")]);
        let no_config = format!(r#"{{"schemaVersion":2,"layers":[{}]}}"#, layer_json(SIF_LAYER, D1));
        let cases: Vec<Case> = vec![
            ("oras-py SIF", one_sif.as_bytes(), Some(OCI_MANIFEST), sif(D1, SIF_LAYER)),
            ("header with params", one_sif.as_bytes(), Some("Application/VND.oci.image.manifest.v1+json; charset=utf-8"), sif(D1, SIF_LAYER)),
            ("no header, sniff mediaType", one_sif.as_bytes(), None, sif(D1, SIF_LAYER)),
            ("no header, no mediaType, sniff layers", no_top_type.as_bytes(), None, sif(D1, SIF_LAYER)),
            ("generic header", no_top_type.as_bytes(), Some("application/json"), sif(D1, SIF_LAYER)),
            ("legacy typo type", legacy.as_bytes(), Some(OCI_MANIFEST), sif(D2, SIF_LAYER_LEGACY)),
            ("two layers", two.as_bytes(), Some(OCI_MANIFEST),
             Err((NoSifLayer, "expected one layer of application/vnd.sylabs.sif.layer.v1.sif, found 2 layers: [application/vnd.sylabs.sif.layer.v1.sif, application/x-other]"))),
            ("non-SIF layer", tar.as_bytes(), Some(OCI_MANIFEST), Err((NoSifLayer, "found 1 layer: [application/vnd.oci.image.layer.v1.tar+gzip]"))),
            ("no layers", zero.as_bytes(), Some(OCI_MANIFEST), Err((NoSifLayer, "found 0 layers: []"))),
            ("docker image", docker.as_bytes(), Some(DOCKER_MANIFEST), Err((NoSifLayer, "rootfs.diff.tar.gzip"))),
            ("header says index, body manifest", one_sif.as_bytes(), Some(OCI_INDEX), Err((BadManifest, "disagrees"))),
            ("md5 digest", md5.as_bytes(), Some(OCI_MANIFEST), Err((BadManifest, "SIF layer digest: digest \"md5:0123\" must start with \"sha256:\""))),
            ("sha512 digest", sha512.as_bytes(), Some(OCI_MANIFEST), Err((BadManifest, "SIF layer digest"))),
            ("path traversal digest", traversal.as_bytes(), Some(OCI_MANIFEST), Err((BadManifest, "not valid"))),
            ("missing config", no_config.as_bytes(), Some(OCI_MANIFEST), Err((BadManifest, "missing field `config`"))),
            ("garbage", b"\x00\xffnot json", Some(OCI_MANIFEST), Err((BadManifest, "manifest is not valid"))),
            ("empty", b"", None, Err((BadManifest, "manifest is not valid"))),
            ("json array", b"[1,2]", None, Err((BadManifest, "manifest is not valid"))),
            ("empty object", b"{}", None, Err((BadManifest, "neither"))),
            ("schema 1", br#"{"schemaVersion":1,"fsLayers":[]}"#, Some("application/vnd.docker.distribution.manifest.v1+prettyjws"), Err((BadManifest, "schema 1"))),
            ("negative size", br#"{"schemaVersion":2,"layers":[{"mediaType":"x","size":-1,"digest":"sha256:1"}],"config":{}}"#, None, Err((BadManifest, "not valid"))),
        ];
        for (name, bytes, content_type, expected) in cases {
            check(name, bytes, content_type, expected);
        }
    }

    #[test]
    fn indexes() {
        use OrasErrorKind::*;
        let both = index_json(
            OCI_INDEX,
            &[child_json(D2, Some(("linux", "arm64"))), child_json(D1, Some(("linux", "amd64")))],
        );
        let arm_only = index_json(
            OCI_INDEX,
            &[child_json(D2, Some(("linux", "arm64"))), child_json(D1, Some(("windows", "amd64")))],
        );
        let bare = index_json(OCI_INDEX, &[child_json(D2, Some(("linux", "arm64"))), child_json(D1, None)]);
        let explicit_beats_bare =
            index_json(OCI_INDEX, &[child_json(D2, None), child_json(D1, Some(("linux", "amd64")))]);
        let docker_list = index_json(
            DOCKER_MANIFEST_LIST,
            &[child_json(D2, Some(("linux", "s390x"))), child_json(D1, Some(("linux", "amd64")))],
        );
        let empty = index_json(OCI_INDEX, &[]);
        let many: Vec<String> = (0..20).map(|_| child_json(D2, Some(("linux", "arm64")))).collect();
        let many = index_json(OCI_INDEX, &many);
        let no_type = format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, child_json(D1, None));
        let cases: Vec<Case> = vec![
            ("amd64 + arm64", both.as_bytes(), Some(OCI_INDEX), child(D1)),
            ("sniffed index", both.as_bytes(), None, child(D1)),
            ("sniffed by manifests key", no_type.as_bytes(), None, child(D1)),
            ("child without platform", bare.as_bytes(), Some(OCI_INDEX), child(D1)),
            ("explicit amd64 wins", explicit_beats_bare.as_bytes(), Some(OCI_INDEX), child(D1)),
            ("docker manifest list", docker_list.as_bytes(), Some(DOCKER_MANIFEST_LIST), child(D1)),
            (
                "no amd64",
                arm_only.as_bytes(),
                Some(OCI_INDEX),
                Err((NoPlatform, "index has no linux/amd64 manifest; platforms found: [linux/arm64, windows/amd64]")),
            ),
            ("empty index", empty.as_bytes(), Some(OCI_INDEX), Err((NoPlatform, "platforms found: []"))),
            ("listing is capped", many.as_bytes(), Some(OCI_INDEX), Err((NoPlatform, ", ... 4 more"))),
            ("header says manifest, body index", both.as_bytes(), Some(OCI_MANIFEST), Err((BadManifest, "disagrees"))),
        ];
        for (name, bytes, content_type, expected) in cases {
            check(name, bytes, content_type, expected);
        }
    }

    #[test]
    fn platform_choice() {
        let both = index_json(
            OCI_INDEX,
            &[child_json(D2, Some(("linux", "arm64"))), child_json(D1, Some(("linux", "amd64")))],
        );
        let bare = index_json(OCI_INDEX, &[child_json(D1, None)]);
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let riscv = Platform::parse("linux/riscv64").unwrap();
        assert_eq!(
            parse_for(both.as_bytes(), Some(OCI_INDEX), &arm64),
            Ok(Parsed::Index { child_digest: Digest::parse_strict(D2).unwrap() })
        );
        // A child without a platform counts as amd64 only.
        let e = parse_for(bare.as_bytes(), Some(OCI_INDEX), &arm64).unwrap_err();
        assert_eq!(e.kind, OrasErrorKind::NoPlatform);
        assert!(e.message.contains("no linux/arm64 manifest; platforms found: [(no platform)]"), "{}", e.message);
        let e = parse_for(both.as_bytes(), Some(OCI_INDEX), &riscv).unwrap_err();
        assert!(e.message.contains("[linux/arm64, linux/amd64] (choose one with --platform)"), "{}", e.message);
    }

    #[test]
    fn bounded_input() {
        use OrasErrorKind::*;
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let deep_layers = format!(r#"{{"layers":{}}}"#, nest(100_000));
        check("deep layers, sniffed", deep_layers.as_bytes(), None, Err((BadManifest, "not valid")));
        check("deep layers, typed", deep_layers.as_bytes(), Some(OCI_MANIFEST), Err((BadManifest, "not valid")));
        let deep_unknown = format!(r#"{{"layers":[],"x":{}}}"#, nest(100_000));
        check("deep unknown field", deep_unknown.as_bytes(), Some(OCI_MANIFEST), Err((BadManifest, "not valid")));
        let deep_annotation = format!(r#"{{"annotations":{{"a":{}}}}}"#, nest(100_000));
        check("deep annotation", deep_annotation.as_bytes(), Some(OCI_MANIFEST), Err((BadManifest, "not valid")));
        let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
        check("over the size limit", &huge, Some(OCI_MANIFEST), Err((BadManifest, "limit 4194304")));
        let long_value = format!(r#"{{"schemaVersion":"{}"}}"#, "x".repeat(10_000));
        let e = parse(long_value.as_bytes(), None).unwrap_err();
        assert!(e.message.len() < 300, "serde detail is truncated: {} bytes", e.message.len());
    }

    #[test]
    fn digests() {
        let check = |bytes: &[u8], expected: &str, want: Result<(), (OrasErrorKind, &str)>| match (
            check_digest(bytes, expected),
            want,
        ) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err((kind, text))) => {
                assert_eq!(e.kind, kind);
                assert!(e.message.contains(text), "{:?} lacks {text:?}", e.message);
            }
            (got, want) => panic!("{expected}: got {got:?}, want {want:?}"),
        };
        check(b"{}", EMPTY_JSON, Ok(()));
        check(b"{} ", EMPTY_JSON, Err((OrasErrorKind::DigestMismatch, "expected sha256:44136f")));
        check(b"{}", D1, Err((OrasErrorKind::DigestMismatch, &format!("got {EMPTY_JSON}"))));
        check(
            b"{}",
            "sha256:44136FA355B3678A1146AD16F7E8649E94FB4FC21FE77E8310C060F61CAAFF8A",
            Err((OrasErrorKind::BadReference, "lowercase")),
        );
        check(
            b"{}",
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            Err((OrasErrorKind::BadReference, "sha256:")),
        );
    }
}
