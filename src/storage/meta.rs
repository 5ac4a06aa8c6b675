//! Task metadata persisted beside each task file, so a restarted daemon can resume or reuse a task.
//!
//! On disk a meta file is one line of compact JSON (format version `"v": 1`) followed by a trailer
//! line `crc32:<8 lowercase hex>` holding the CRC-32 of the JSON line. Invariant: `decode` only
//! returns a `TaskMeta` whose bytes passed the checksum, whose version is known and whose fields
//! agree with each other (piece counts match the length, a finished task has every piece), so a
//! torn, corrupt or foreign file is reported, never half-trusted. `write_atomic` keeps the previous
//! version intact until the new one is durable.
//!
//! All IO here is blocking `std::fs`: meta files are small and written at task milestones, so
//! callers run these on a blocking path (or a dispatcher thread), never inline on a core's event
//! loop.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits::MAX_PIECE_LEN_BYTES;

/// The only format version this build reads and writes.
pub const META_VERSION: u32 = 1;
/// Task ids are hex(sha256(...)).
pub const TASK_ID_HEX_LEN: usize = 64;
/// 2^18 pieces: 16 TiB at the 64 MiB cap, 1 TiB at 4 MiB; bounds the meta size below.
pub const MAX_PIECES: usize = 1 << 18;
/// An ETag or HTTP date; real ones are well under 100 bytes.
pub const MAX_VALIDATOR_BYTES: usize = 1024;
/// Presigned URLs can be long, but not unbounded.
pub const MAX_URL_BYTES: usize = 64 << 10;
/// MAX_PIECES at ~12 bytes each (one flag char, a crc of up to 10 digits, a comma) plus the URL
/// and the fixed fields; a larger file is not ours and is refused before parsing.
pub const MAX_META_BYTES: u64 = 4 << 20;

const _: () = assert!((MAX_PIECES as u64) * 12 + (MAX_URL_BYTES as u64) + 4096 <= MAX_META_BYTES);

const CRC_PREFIX: &[u8] = b"crc32:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMeta {
    pub task_id: String,
    pub url: String,
    /// None while the length is unknown (streamed body without Content-Length).
    pub content_len: Option<u64>,
    pub piece_len: u64,
    pub pieces_done: Vec<bool>,
    /// CRC-32 of each piece; meaningful only where `pieces_done` is true.
    pub piece_crcs: Vec<u32>,
    /// What the content must hash to, if known; on disk as its string (`"sha256:<hex>"`).
    pub digest: Option<crate::digest::Digest>,
    pub created_unix_ms: u64,
    pub last_access_unix_ms: u64,
    pub finished_unix_ms: Option<u64>,
    /// The origin's strong validator (ETag, else Last-Modified) the pieces were fetched under; a
    /// resumed task sends it as `If-Range`, so a file changed while the daemon was down is caught.
    pub validator: Option<String>,
    /// Fetched with credentials: reused only for requests the origin accepts (`daemon::access`).
    /// The credentials themselves are never stored; `url` is redacted.
    pub private: bool,
    /// Every validator of the first response (weak ETag included, Last-Modified): a resumed task's
    /// pieces must still show them. None in files written before they were kept.
    pub validators: Option<Validators>,
    /// Pieces in flight when this was written, with how far each got: a resume asks only for the
    /// rest. Sorted by index, none of them done.
    pub partial: Vec<PartialPiece>,
}

/// A piece a fraction fetched: its first `len_bytes` are on disk, with crc32 `crc` (crc32 is
/// incremental, so the rest continues the same crc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialPiece {
    pub idx: u64,
    pub len_bytes: u64,
    pub crc: u32,
}

/// What identifies one version of the content in a response head: its ETag (weak or strong) and
/// Last-Modified, each as sent (trimmed), None when missing or not sane to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validators {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

impl Validators {
    /// None when `piece` shows the same version as `self` (the first response); else what differs.
    /// Any difference counts, a validator that appears or disappears included: without it the
    /// piece cannot be shown to be the same version.
    pub fn differs(&self, piece: &Validators) -> Option<String> {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
        if self.etag != piece.etag {
            return Some(format!("ETag {} → {}", show(&self.etag), show(&piece.etag)));
        }
        if self.last_modified != piece.last_modified {
            return Some(format!("Last-Modified {} → {}", show(&self.last_modified), show(&piece.last_modified)));
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaErrorKind {
    /// No meta file: the task is new (or was never persisted).
    NotFound,
    /// Any other IO failure reading or writing.
    Io,
    /// Larger than `MAX_META_BYTES`.
    TooLarge,
    /// Missing or malformed checksum trailer: a torn or truncated write.
    Truncated,
    /// The trailer is there but does not match the body: corruption.
    Checksum,
    /// The checksum holds but the JSON is not a v1 meta (syntax, types, unknown fields).
    Malformed,
    /// A format version this build does not know.
    Version,
    /// Well-formed but the fields contradict each other or break a limit.
    Inconsistent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaError {
    pub kind: MetaErrorKind,
    pub message: String,
}

impl MetaError {
    fn new(kind: MetaErrorKind, message: impl Into<String>) -> Self {
        MetaError { kind, message: message.into() }
    }
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task metadata: {}", self.message)
    }
}

impl std::error::Error for MetaError {}

/// What goes on disk when encoding; borrows so encoding copies nothing but the piece flags.
#[derive(Serialize)]
struct WireOut<'a> {
    v: u32,
    task_id: &'a str,
    url: &'a str,
    content_len: Option<u64>,
    piece_len: u64,
    /// One char per piece, `1` = done: 5x smaller than a JSON bool array and still readable.
    pieces_done: String,
    piece_crcs: &'a [u32],
    digest: Option<&'a str>,
    created_unix_ms: u64,
    last_access_unix_ms: u64,
    finished_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    validator: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    validators: Option<&'a Validators>,
    #[serde(skip_serializing_if = "<[PartialPiece]>::is_empty")]
    partial: &'a [PartialPiece],
    #[serde(skip_serializing_if = "is_false")]
    private: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIn {
    #[allow(dead_code)] // checked by `VersionProbe` before this is parsed
    v: u32,
    task_id: String,
    url: String,
    content_len: Option<u64>,
    piece_len: u64,
    pieces_done: String,
    piece_crcs: Vec<u32>,
    digest: Option<String>,
    created_unix_ms: u64,
    last_access_unix_ms: u64,
    finished_unix_ms: Option<u64>,
    /// Added within format 1: absent in older files, which is fine (no validator known).
    #[serde(default)]
    validator: Option<String>,
    /// Added within format 1 like `validator`: absent means public.
    #[serde(default)]
    private: bool,
    #[serde(default)]
    validators: Option<Validators>,
    #[serde(default)]
    partial: Vec<PartialPiece>,
}

/// Parsed first so that a future version is reported as `Version`, not as whatever field of
/// ours it happens to lack.
#[derive(Deserialize)]
struct VersionProbe {
    v: Option<u64>,
}

impl TaskMeta {
    /// JSON line + checksum trailer. Debug builds assert the meta would decode again (the write
    /// side of the read-side checks).
    pub fn encode(&self) -> Vec<u8> {
        debug_assert_eq!(validate(self), Ok(()), "encoding an inconsistent TaskMeta");
        self.encode_unchecked()
    }

    fn encode_unchecked(&self) -> Vec<u8> {
        let wire = WireOut {
            v: META_VERSION,
            task_id: &self.task_id,
            url: &self.url,
            content_len: self.content_len,
            piece_len: self.piece_len,
            pieces_done: self.pieces_done.iter().map(|&done| if done { '1' } else { '0' }).collect(),
            piece_crcs: &self.piece_crcs,
            digest: self.digest.as_ref().map(crate::digest::Digest::as_str),
            created_unix_ms: self.created_unix_ms,
            last_access_unix_ms: self.last_access_unix_ms,
            finished_unix_ms: self.finished_unix_ms,
            validator: self.validator.as_deref(),
            private: self.private,
            validators: self.validators.as_ref(),
            partial: &self.partial,
        };
        // Serializing plain strings and integers into a Vec has no failure mode in serde_json
        // (no IO, no non-string map keys, no custom Serialize), so this is an invariant, not input.
        let mut out = serde_json::to_vec(&wire).expect("TaskMeta serializes infallibly");
        // Compact serde_json escapes control characters, so the body is exactly one line.
        debug_assert!(!out.contains(&b'\n'));
        let crc = crc32fast::hash(&out);
        out.push(b'\n');
        out.extend_from_slice(CRC_PREFIX);
        out.extend_from_slice(format!("{crc:08x}\n").as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<TaskMeta, MetaError> {
        if bytes.len() as u64 > MAX_META_BYTES {
            return Err(too_large(bytes.len() as u64));
        }
        let (body, want_crc) = split_trailer(bytes)?;
        let got_crc = crc32fast::hash(body);
        if got_crc != want_crc {
            return Err(MetaError::new(
                MetaErrorKind::Checksum,
                format!("checksum mismatch (stored {want_crc:08x}, computed {got_crc:08x}): corrupt"),
            ));
        }
        let probe: VersionProbe = serde_json::from_slice(body).map_err(malformed)?;
        match probe.v {
            Some(v) if v == u64::from(META_VERSION) => {}
            Some(v) => {
                return Err(MetaError::new(
                    MetaErrorKind::Version,
                    format!("format version {v} is not supported (this build reads {META_VERSION})"),
                ))
            }
            None => return Err(MetaError::new(MetaErrorKind::Version, "no format version field \"v\"")),
        }
        let wire: WireIn = serde_json::from_slice(body).map_err(malformed)?;
        let meta = from_wire(wire)?;
        validate(&meta).map_err(|message| MetaError::new(MetaErrorKind::Inconsistent, message))?;
        Ok(meta)
    }

    /// Finished = marked finished, length known and every piece present. `decode` guarantees the
    /// three agree; checking all of them keeps a half-built in-memory value from passing.
    pub fn is_finished(&self) -> bool {
        self.finished_unix_ms.is_some() && self.content_len.is_some() && self.pieces_done.iter().all(|&done| done)
    }
}

fn malformed(err: serde_json::Error) -> MetaError {
    MetaError::new(MetaErrorKind::Malformed, format!("not a v{META_VERSION} meta: {err}"))
}

fn too_large(len: u64) -> MetaError {
    MetaError::new(MetaErrorKind::TooLarge, format!("{len} bytes exceeds the {MAX_META_BYTES}-byte limit"))
}

/// Splits `body \n crc32:xxxxxxxx \n` into the body and the stored crc.
fn split_trailer(bytes: &[u8]) -> Result<(&[u8], u32), MetaError> {
    let torn =
        || MetaError::new(MetaErrorKind::Truncated, "missing or malformed checksum trailer: torn or truncated write");
    let without_nl = bytes.strip_suffix(b"\n").ok_or_else(torn)?;
    let sep = without_nl.iter().rposition(|&b| b == b'\n').ok_or_else(torn)?;
    let (body, trailer) = (&without_nl[..sep], &without_nl[sep + 1..]);
    let hex = trailer.strip_prefix(CRC_PREFIX).ok_or_else(torn)?;
    if hex.len() != 8 {
        return Err(torn());
    }
    let mut crc = 0u32;
    for &b in hex {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return Err(torn()),
        };
        crc = (crc << 4) | u32::from(digit);
    }
    Ok((body, crc))
}

fn from_wire(wire: WireIn) -> Result<TaskMeta, MetaError> {
    if wire.pieces_done.len() > MAX_PIECES {
        return Err(MetaError::new(
            MetaErrorKind::Inconsistent,
            format!("{} pieces exceeds the limit of {MAX_PIECES}", wire.pieces_done.len()),
        ));
    }
    let pieces_done = wire
        .pieces_done
        .bytes()
        .map(|b| match b {
            b'1' => Ok(true),
            b'0' => Ok(false),
            _ => Err(MetaError::new(MetaErrorKind::Malformed, "pieces_done holds a char other than 0/1")),
        })
        .collect::<Result<Vec<bool>, MetaError>>()?;
    let digest = wire
        .digest
        .map(|d| crate::digest::Digest::parse_strict(&d))
        .transpose()
        .map_err(|e| MetaError::new(MetaErrorKind::Inconsistent, e))?;
    Ok(TaskMeta {
        task_id: wire.task_id,
        url: wire.url,
        content_len: wire.content_len,
        piece_len: wire.piece_len,
        pieces_done,
        piece_crcs: wire.piece_crcs,
        digest,
        created_unix_ms: wire.created_unix_ms,
        last_access_unix_ms: wire.last_access_unix_ms,
        finished_unix_ms: wire.finished_unix_ms,
        validator: wire.validator,
        private: wire.private,
        validators: wire.validators,
        partial: wire.partial,
    })
}

/// The cross-field rules. The piece count of a known length is ceil(len / piece_len), so empty
/// content has zero pieces. Timestamps are not ordered against each other: wall clocks step back.
fn validate(meta: &TaskMeta) -> Result<(), String> {
    validate_strings(meta)?;
    if meta.piece_len == 0 || meta.piece_len > MAX_PIECE_LEN_BYTES {
        return Err(format!("piece_len {} is outside 1..={MAX_PIECE_LEN_BYTES}", meta.piece_len));
    }
    let n_pieces = meta.pieces_done.len();
    if n_pieces != meta.piece_crcs.len() {
        return Err(format!("{n_pieces} piece flags but {} piece crcs", meta.piece_crcs.len()));
    }
    if n_pieces > MAX_PIECES {
        return Err(format!("{n_pieces} pieces exceeds the limit of {MAX_PIECES}"));
    }
    match meta.content_len {
        Some(len) => {
            let want = len.div_ceil(meta.piece_len);
            if want != n_pieces as u64 {
                return Err(format!(
                    "content_len {len} with piece_len {} needs {want} pieces, found {n_pieces}",
                    meta.piece_len
                ));
            }
        }
        None if meta.finished_unix_ms.is_some() => {
            return Err("marked finished but content_len is unknown".to_string());
        }
        None => {}
    }
    if meta.finished_unix_ms.is_some() {
        if let Some(missing) = meta.pieces_done.iter().position(|&done| !done) {
            return Err(format!("marked finished but piece {missing} is missing"));
        }
    }
    validate_partial(meta)
}

/// Partial pieces: known length, ascending distinct indexes of pieces not done, each a proper
/// prefix (0 < len < the piece's length).
fn validate_partial(meta: &TaskMeta) -> Result<(), String> {
    if meta.partial.is_empty() {
        return Ok(());
    }
    let Some(len) = meta.content_len else { return Err("partial pieces without a content_len".to_string()) };
    let mut prev: Option<u64> = None;
    for p in &meta.partial {
        let piece_start = p.idx.saturating_mul(meta.piece_len);
        let piece_len = len.saturating_sub(piece_start).min(meta.piece_len);
        let fits = p.len_bytes > 0 && p.len_bytes < piece_len;
        let fresh = meta.pieces_done.get(p.idx as usize) == Some(&false);
        if !fits || !fresh || prev.is_some_and(|q| q >= p.idx) {
            return Err(format!("partial piece {} of {} bytes does not fit the task", p.idx, p.len_bytes));
        }
        prev = Some(p.idx);
    }
    Ok(())
}

/// Ids end up in file names and comparisons, so only their expected shapes pass.
fn validate_strings(meta: &TaskMeta) -> Result<(), String> {
    let is_lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if meta.task_id.len() != TASK_ID_HEX_LEN || !is_lower_hex(&meta.task_id) {
        return Err(format!("task_id is not {TASK_ID_HEX_LEN} lowercase hex chars"));
    }
    if meta.url.is_empty() || meta.url.len() > MAX_URL_BYTES {
        return Err(format!("url length {} is outside 1..={MAX_URL_BYTES}", meta.url.len()));
    }
    let insane = |v: &Option<String>| {
        v.as_ref().is_some_and(|v| v.len() > MAX_VALIDATOR_BYTES || v.chars().any(char::is_control))
    };
    let vs = meta.validators.clone().unwrap_or_default();
    if insane(&meta.validator) || insane(&vs.etag) || insane(&vs.last_modified) {
        return Err(format!("validator longer than {MAX_VALIDATOR_BYTES} bytes or with control characters"));
    }
    // The digest's shape is its type's (`Digest`), checked by `from_wire`.
    Ok(())
}

/// Crash-safe replace: write `<path>.tmp`, fsync it, rename it over `path`, fsync the directory so
/// the rename itself is durable. After a crash `path` holds either the old or the new bytes, never
/// a mix. One writer per path at a time (the task's owner): concurrent writers would share the tmp.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, true)
}

/// `write_atomic` without any fsync: a progress checkpoint. After a power loss `path` may hold
/// the old bytes, the new ones, or a torn file (which `read` reports, and the task is dropped);
/// a crash of the daemon alone loses nothing (the rename is in the kernel). Safe for task
/// metadata because every piece it records is re-checked by crc before a restarted daemon trusts
/// it (ARCHITECTURE.md, "Durability without fsync").
pub fn write_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let tmp = tmp_path(path)?;
    if let Err(err) = write_and_rename(&tmp, path, bytes, sync) {
        // Best effort: a leftover tmp is harmless (the next write truncates it) but untidy.
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    if !sync {
        return Ok(());
    }
    sync_dir(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

fn tmp_path(path: &Path) -> io::Result<PathBuf> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("meta path {} has no file name", path.display()),
        ));
    };
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    Ok(path.with_file_name(tmp_name))
}

fn write_and_rename(tmp: &Path, path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // 0600: metadata names URLs (and whether they needed credentials); a leftover tmp from an
    // older build may be 0644, hence the explicit fchmod too.
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(tmp)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    if sync {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(tmp, path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads and decodes the meta at `path`; every error message names the path.
pub fn read(path: &Path) -> Result<TaskMeta, MetaError> {
    let with_path = |err: MetaError| MetaError::new(err.kind, format!("{}: {}", path.display(), err.message));
    let file = File::open(path).map_err(|err| {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => MetaErrorKind::NotFound,
            _ => MetaErrorKind::Io,
        };
        MetaError::new(kind, format!("{}: open: {err}", path.display()))
    })?;
    let mut bytes = Vec::new();
    // One byte past the limit tells "too large" from "exactly at the limit" without trusting stat.
    file.take(MAX_META_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| MetaError::new(MetaErrorKind::Io, format!("{}: read: {err}", path.display())))?;
    if bytes.len() as u64 > MAX_META_BYTES {
        return Err(with_path(too_large(bytes.len() as u64)));
    }
    TaskMeta::decode(&bytes).map_err(with_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const MIB: u64 = 1 << 20;

    fn meta() -> TaskMeta {
        TaskMeta {
            task_id: ID.to_string(),
            url: "https://example.com/a.bin".to_string(),
            content_len: Some(10 * MIB),
            piece_len: 4 * MIB,
            pieces_done: vec![true, false, true],
            piece_crcs: vec![0xdead_beef, 0, 7],
            digest: None,
            created_unix_ms: 1_700_000_000_000,
            last_access_unix_ms: 1_700_000_001_000,
            finished_unix_ms: None,
            validator: None,
            private: false,
            validators: None,
            partial: Vec::new(),
        }
    }

    fn finished() -> TaskMeta {
        TaskMeta {
            pieces_done: vec![true; 3],
            piece_crcs: vec![1, 2, u32::MAX],
            digest: Some(crate::digest::Digest::parse_strict(&format!("sha256:{ID}")).expect("digest")),
            finished_unix_ms: Some(1_700_000_002_000),
            ..meta()
        }
    }

    /// Encodes `body` (a JSON line) with a valid trailer, bypassing TaskMeta.
    fn with_trailer(body: &str) -> Vec<u8> {
        format!("{body}\ncrc32:{:08x}\n", crc32fast::hash(body.as_bytes())).into_bytes()
    }

    fn check_round_trip(name: &str, m: TaskMeta, finished: bool) {
        let bytes = m.encode();
        let back = TaskMeta::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, m, "{name}");
        assert_eq!(back.is_finished(), finished, "{name}: is_finished");
    }

    #[test]
    fn round_trip() {
        check_round_trip("partial", meta(), false);
        check_round_trip("finished with digest", finished(), true);
        let unknown = TaskMeta { content_len: None, pieces_done: vec![true, true], piece_crcs: vec![5, 6], ..meta() };
        check_round_trip("unknown length, streaming", unknown, false);
        let empty = TaskMeta {
            content_len: Some(0),
            pieces_done: vec![],
            piece_crcs: vec![],
            finished_unix_ms: Some(1),
            ..meta()
        };
        check_round_trip("empty content is zero pieces", empty, true);
        let exact =
            TaskMeta { content_len: Some(8 * MIB), pieces_done: vec![false, false], piece_crcs: vec![0, 0], ..meta() };
        check_round_trip("length a multiple of piece_len", exact, false);
        let validated = TaskMeta { validator: Some("\"6936b6a4-1312d07\"".to_string()), ..meta() };
        check_round_trip("private", TaskMeta { private: true, ..meta() }, false);
        check_round_trip("with the origin's validator", validated, false);
        let weak = TaskMeta {
            validators: Some(Validators {
                etag: Some("W/\"A\"".to_string()),
                last_modified: Some("Sun, 29 Nov 2026 16:21:40 GMT".to_string()),
            }),
            ..meta()
        };
        check_round_trip("with every validator of the first response", weak, false);
        let p = |idx, len_bytes| PartialPiece { idx, len_bytes, crc: 7 };
        let two = vec![false, false];
        let partial = TaskMeta {
            content_len: Some(8 * MIB),
            pieces_done: two.clone(),
            piece_crcs: vec![0, 0],
            partial: vec![p(0, 1), p(1, 4 * MIB - 1)],
            ..meta()
        };
        check_round_trip("pieces in flight, with how far they got", partial, false);
        for (what, bad) in [
            ("a whole piece", vec![p(1, 4 * MIB)]),
            ("nothing", vec![p(0, 0)]),
            ("past the end", vec![p(2, 1)]),
            ("out of order", vec![p(1, 1), p(0, 1)]),
        ] {
            let m = TaskMeta {
                content_len: Some(8 * MIB),
                pieces_done: two.clone(),
                piece_crcs: vec![0, 0],
                partial: bad,
                ..meta()
            };
            assert!(validate(&m).is_err(), "partial {what} passed validation");
        }
        let done_and_partial = TaskMeta {
            content_len: Some(8 * MIB),
            pieces_done: vec![true, false],
            piece_crcs: vec![0, 0],
            partial: vec![p(0, 1)],
            ..meta()
        };
        assert!(validate(&done_and_partial).is_err(), "a done piece listed as partial passed validation");
        let none = TaskMeta { validators: Some(Validators::default()), ..meta() };
        check_round_trip("first response had no validators", none, false);
        let odd_url = TaskMeta { url: "https://ex.com/ü\n\"q\"?a=1&b=\u{7f}".to_string(), ..meta() };
        check_round_trip("url with escapes and non-ascii", odd_url, false);
        let max_ts = TaskMeta { created_unix_ms: u64::MAX, last_access_unix_ms: 0, ..finished() };
        check_round_trip("timestamps unordered and extreme", max_ts, true);
    }

    #[test]
    fn format_is_one_json_line_and_a_trailer() {
        let bytes = meta().encode();
        let text = String::from_utf8(bytes).expect("utf8");
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("{\"v\":1,"), "{}", lines[0]);
        assert!(lines[0].contains("\"pieces_done\":\"101\""), "{}", lines[0]);
        assert_eq!(lines[1], format!("crc32:{:08x}", crc32fast::hash(lines[0].as_bytes())));
    }

    #[test]
    fn every_byte_flip_is_detected() {
        for m in [meta(), finished()] {
            let good = m.encode();
            for pos in 0..good.len() {
                for mask in [0x01u8, 0x20, 0x80, 0xff] {
                    let mut bad = good.clone();
                    bad[pos] ^= mask;
                    let err = TaskMeta::decode(&bad).expect_err("flip accepted");
                    assert!(
                        matches!(err.kind, MetaErrorKind::Checksum | MetaErrorKind::Truncated),
                        "flip {mask:#x} at {pos}: {err:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let good = meta().encode();
        for len in 0..good.len() {
            let err = TaskMeta::decode(&good[..len]).expect_err("truncation accepted");
            assert!(
                matches!(err.kind, MetaErrorKind::Checksum | MetaErrorKind::Truncated),
                "truncated to {len}: {err:?}"
            );
        }
        let mut longer = good.clone();
        longer.extend_from_slice(b"\n");
        assert!(TaskMeta::decode(&longer).is_err(), "trailing newline accepted");
    }

    fn check_decode_err(name: &str, bytes: &[u8], kind: MetaErrorKind) {
        match TaskMeta::decode(bytes) {
            Ok(m) => panic!("{name}: accepted {m:?}"),
            Err(err) => assert_eq!(err.kind, kind, "{name}: {err}"),
        }
    }

    #[test]
    fn wrong_version_and_malformed_bodies() {
        use MetaErrorKind::{Checksum, Malformed, TooLarge, Truncated, Version};
        let v1 = String::from_utf8(meta().encode()).expect("utf8");
        let body = v1.lines().next().expect("body");
        let cases: Vec<(&str, Vec<u8>, MetaErrorKind)> = vec![
            ("version 2", with_trailer(&body.replace("\"v\":1", "\"v\":2")), Version),
            ("version 0", with_trailer(&body.replace("\"v\":1", "\"v\":0")), Version),
            ("no version", with_trailer(&body.replace("\"v\":1,", "")), Version),
            ("version as string", with_trailer(&body.replace("\"v\":1", "\"v\":\"1\"")), Malformed),
            ("future format, other fields", with_trailer(r#"{"v":9,"blob":[1,2]}"#), Version),
            ("unknown field", with_trailer(&body.replace("\"v\":1,", "\"v\":1,\"extra\":0,")), Malformed),
            ("missing field", with_trailer(&body.replace("\"piece_len\":4194304,", "")), Malformed),
            ("piece flag not 0/1", with_trailer(&body.replace("\"101\"", "\"1x1\"")), Malformed),
            ("negative number", with_trailer(&body.replace("\"piece_len\":4194304", "\"piece_len\":-1")), Malformed),
            ("not json", with_trailer("hello"), Malformed),
            ("json array", with_trailer("[1]"), Malformed),
            ("empty body", with_trailer(""), Malformed),
            ("empty file", vec![], Truncated),
            (
                "uppercase crc",
                body.to_string().into_bytes().into_iter().chain(b"\ncrc32:DEADBEEF\n".iter().copied()).collect(),
                Truncated,
            ),
            ("wrong crc", format!("{body}\ncrc32:00000000\n").into_bytes(), Checksum),
            ("too large", vec![b' '; MAX_META_BYTES as usize + 1], TooLarge),
        ];
        for (name, bytes, kind) in cases {
            check_decode_err(name, &bytes, kind);
        }
    }

    #[test]
    fn inconsistent_fields() {
        let cases: Vec<(&str, TaskMeta)> = vec![
            ("crc count differs", TaskMeta { piece_crcs: vec![1, 2], ..meta() }),
            ("too few pieces for length", TaskMeta { content_len: Some(12 * MIB + 1), ..meta() }),
            ("too many pieces for length", TaskMeta { content_len: Some(8 * MIB), ..meta() }),
            (
                "empty content with a piece",
                TaskMeta { content_len: Some(0), pieces_done: vec![true], piece_crcs: vec![0], ..meta() },
            ),
            ("finished with a piece missing", TaskMeta { finished_unix_ms: Some(5), ..meta() }),
            ("finished, length unknown", TaskMeta { content_len: None, ..finished() }),
            ("piece_len zero", TaskMeta { piece_len: 0, ..meta() }),
            (
                "piece_len over cap",
                TaskMeta {
                    piece_len: MAX_PIECE_LEN_BYTES + 1,
                    content_len: Some(1),
                    pieces_done: vec![false],
                    piece_crcs: vec![0],
                    ..meta()
                },
            ),
            ("task id short", TaskMeta { task_id: "abc".to_string(), ..meta() }),
            ("task id path", TaskMeta { task_id: format!("../{}", &ID[3..]), ..meta() }),
            ("task id uppercase", TaskMeta { task_id: ID.to_uppercase(), ..meta() }),
            ("url empty", TaskMeta { url: String::new(), ..meta() }),
            ("url too long", TaskMeta { url: "h".repeat(MAX_URL_BYTES + 1), ..meta() }),
            (
                "too many pieces",
                TaskMeta {
                    content_len: None,
                    pieces_done: vec![false; MAX_PIECES + 1],
                    piece_crcs: vec![0; MAX_PIECES + 1],
                    ..meta()
                },
            ),
        ];
        for (name, m) in cases {
            check_decode_err(name, &m.encode_unchecked(), MetaErrorKind::Inconsistent);
        }
        // A `Digest` cannot hold these, so they are written as JSON (as a foreign or damaged file
        // would hold them).
        let body = String::from_utf8(meta().encode()).expect("utf-8");
        let body = body.lines().next().expect("json line");
        assert!(body.contains("\"digest\":null"), "{body}");
        for (name, digest) in [
            ("digest without algo", format!(":{ID}")),
            ("digest without hex", "sha256:".to_string()),
            ("digest not hex", "sha256:xyz".to_string()),
            ("digest no colon", ID.to_string()),
            ("digest uppercase", format!("sha256:{}", ID.to_uppercase())),
        ] {
            let bad = body.replace("\"digest\":null", &format!("\"digest\":\"{digest}\""));
            check_decode_err(name, &with_trailer(&bad), MetaErrorKind::Inconsistent);
        }
    }

    /// A finished task's meta.json byte for byte as this format has always written it (the digest
    /// a plain string): it still loads, digest included, and encodes back to the same bytes.
    #[test]
    fn meta_json_written_before_the_digest_type_still_loads() {
        let old = format!(
            "{{\"v\":1,\"task_id\":\"{ID}\",\"url\":\"https://example.com/a.bin\",\"content_len\":10485760,\
             \"piece_len\":4194304,\"pieces_done\":\"111\",\"piece_crcs\":[1,2,4294967295],\
             \"digest\":\"sha256:{ID}\",\"created_unix_ms\":1700000000000,\"last_access_unix_ms\":1700000001000,\
             \"finished_unix_ms\":1700000002000}}"
        );
        let bytes = with_trailer(&old);
        assert_eq!(TaskMeta::decode(&bytes), Ok(finished()));
        assert_eq!(finished().encode(), bytes);
    }

    #[test]
    fn largest_meta_fits_the_size_limit() {
        let m = TaskMeta {
            url: "h".repeat(MAX_URL_BYTES),
            content_len: Some(MAX_PIECES as u64 * MAX_PIECE_LEN_BYTES),
            piece_len: MAX_PIECE_LEN_BYTES,
            pieces_done: vec![true; MAX_PIECES],
            piece_crcs: vec![u32::MAX; MAX_PIECES],
            digest: Some(crate::digest::Digest::of(b"the longest digest we keep")),
            created_unix_ms: u64::MAX,
            last_access_unix_ms: u64::MAX,
            finished_unix_ms: Some(u64::MAX),
            ..meta()
        };
        let bytes = m.encode();
        assert!(bytes.len() as u64 <= MAX_META_BYTES, "{} bytes", bytes.len());
        assert_eq!(TaskMeta::decode(&bytes), Ok(m));
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(format!("{ID}.meta"));
        write_atomic(&path, &meta().encode()).expect("first write");
        assert_eq!(read(&path), Ok(meta()));
        write_atomic(&path, &finished().encode()).expect("second write");
        assert_eq!(read(&path), Ok(finished()));
        assert_eq!(dir_names(dir.path()), vec![format!("{ID}.meta")]);
    }

    #[test]
    fn write_atomic_overwrites_a_stale_tmp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.meta");
        fs::write(dir.path().join("t.meta.tmp"), vec![b'x'; 10_000]).expect("stale tmp");
        write_atomic(&path, b"new").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"new");
        assert_eq!(dir_names(dir.path()), vec!["t.meta".to_string()]);
    }

    #[test]
    fn write_atomic_failure_keeps_old_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.meta");
        write_atomic(&path, b"old").expect("write");
        // A directory in the tmp's place makes the tmp open fail.
        fs::create_dir(dir.path().join("t.meta.tmp")).expect("mkdir");
        assert!(write_atomic(&path, b"new").is_err());
        assert_eq!(fs::read(&path).expect("read"), b"old");
        let no_name = write_atomic(Path::new("/"), b"x").expect_err("root has no file name");
        assert_eq!(no_name.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn read_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = |name: &str, contents: Option<&[u8]>, kind: MetaErrorKind| {
            let path = dir.path().join(name);
            if let Some(bytes) = contents {
                fs::write(&path, bytes).expect("write");
            }
            let err = read(&path).expect_err(name);
            assert_eq!(err.kind, kind, "{name}: {err}");
            assert!(err.message.contains(name), "{name}: message lacks the path: {err}");
        };
        check("missing", None, MetaErrorKind::NotFound);
        check("empty", Some(b""), MetaErrorKind::Truncated);
        let big = vec![b'x'; MAX_META_BYTES as usize + 1];
        check("big", Some(&big), MetaErrorKind::TooLarge);
        let good = meta().encode();
        check("torn", Some(&good[..good.len() / 2]), MetaErrorKind::Truncated);
        let dir_path = dir.path().join("adir");
        fs::create_dir(&dir_path).expect("mkdir");
        check("adir", None, MetaErrorKind::Io);
    }
}
