//! Vortex, the TLV protocol Dragonfly's Rust dfdaemon speaks for piece bytes on TCP, as pure
//! functions over bytes (the `vortex-protocol` crate does the field layout). One connection carries
//! one exchange: the child sends `DownloadPiece{task id, number}`; the parent answers a
//! `PieceContent` packet whose value is the piece's metadata, followed on the connection by exactly
//! `metadata.length` raw bytes, or an `Error` packet.
//!
//! Invariant: nothing here trusts a length from the wire beyond the bounds in `limits.rs`; a task
//! id is accepted only as 64 lowercase hex characters, so it can never name a path.

use crate::limits::{MAX_PIECE_LEN_BYTES, MAX_VORTEX_VALUE_BYTES};
use vortex_protocol::tlv::{
    download_piece::DownloadPiece, error::Code, error::Error as VortexError, piece_content::PieceContent,
    piece_metadata::PieceMetadata, Tag,
};
use vortex_protocol::{Header, Message};

pub use vortex_protocol::HEADER_SIZE;

/// A refusal the upload server sends back, and the child reads: the Vortex error code and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

/// The Vortex error codes this daemon sends and understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    InvalidArgument,
    NotFound,
    Internal,
    Other(u8),
}

impl RefusalCode {
    fn to_wire(self) -> Code {
        match self {
            RefusalCode::InvalidArgument => Code::InvalidArgument,
            RefusalCode::NotFound => Code::NotFound,
            RefusalCode::Internal => Code::Internal,
            RefusalCode::Other(c) => Code::from(c),
        }
    }
    fn from_wire(code: Code) -> RefusalCode {
        match code {
            Code::InvalidArgument => RefusalCode::InvalidArgument,
            Code::NotFound => RefusalCode::NotFound,
            Code::Internal => RefusalCode::Internal,
            other => RefusalCode::Other(u8::from(other)),
        }
    }
}

impl Refusal {
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Refusal {
        Refusal { code, message: message.into() }
    }
}

/// What a parent says about the piece it is about to send (the Vortex piece metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceHead {
    pub number: u32,
    pub offset: u64,
    pub length: u64,
    /// `crc32:<decimal>` as Dragonfly's Rust dfdaemon writes it.
    pub digest: String,
    pub parent_id: String,
    pub cost_secs: u64,
    pub created_at_secs: i64,
}

/// True when `id` is a task id as Dragonfly writes them: 64 lowercase hex characters.
pub fn valid_task_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The packet a child sends to ask for one piece.
pub fn encode_request(task_id: &str, number: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + 68);
    DownloadPiece::new(task_id.to_string(), number).encode_packet(&mut out);
    out
}

/// Decodes a packet header; `Err` names what is wrong with it.
pub fn decode_header(bytes: &[u8; HEADER_SIZE]) -> Result<(Tag, u32), String> {
    let header = Header::decode(bytes).map_err(|e| format!("bad vortex header: {e}"))?;
    if header.length() as usize > MAX_VORTEX_VALUE_BYTES {
        return Err(format!("vortex value of {} bytes is over the limit", header.length()));
    }
    Ok((header.tag(), header.length()))
}

/// Server side: the piece a request packet asks for, or the refusal to send back.
pub fn parse_request(tag: Tag, value: &[u8]) -> Result<(String, u32), Refusal> {
    if tag != Tag::DownloadPiece {
        return Err(Refusal::new(RefusalCode::InvalidArgument, format!("unsupported request tag {tag:?}")));
    }
    let req = DownloadPiece::decode(value)
        .map_err(|e| Refusal::new(RefusalCode::InvalidArgument, format!("malformed request: {e}")))?;
    if !valid_task_id(&req.task_id) {
        return Err(Refusal::new(RefusalCode::InvalidArgument, "malformed task id"));
    }
    Ok((req.task_id, req.piece_number))
}

/// Server side: the packet that precedes a piece's raw bytes.
pub fn encode_piece_head(head: &PieceHead) -> Vec<u8> {
    let created_at = chrono_secs(head.created_at_secs);
    let content = PieceContent {
        metadata: PieceMetadata {
            number: head.number,
            offset: head.offset,
            length: head.length,
            digest: head.digest.clone(),
            parent_id: head.parent_id.clone(),
            // Dragonfly's TrafficType::RemotePeer: the child got it from another peer.
            traffic_type: 1,
            cost: std::time::Duration::from_secs(head.cost_secs),
            created_at,
        },
    };
    let mut out = Vec::with_capacity(HEADER_SIZE + content.encoded_len());
    content.encode_packet(&mut out);
    out
}

fn chrono_secs(secs: i64) -> chrono::NaiveDateTime {
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default().naive_utc()
}

/// Server side: an error packet.
pub fn encode_refusal(refusal: &Refusal) -> Vec<u8> {
    let err = VortexError::new(refusal.code.to_wire(), refusal.message.clone());
    let mut out = Vec::new();
    err.encode_packet(&mut out);
    out
}

/// What a parent answered, once the value after the header has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The piece's metadata; `head.length` raw bytes follow on the connection.
    Piece(PieceHead),
    Refused(Refusal),
}

/// Child side: decodes the answer packet's value. `Err` is a protocol violation.
pub fn parse_answer(tag: Tag, value: &[u8]) -> Result<Answer, String> {
    match tag {
        Tag::PieceContent => {
            let content = PieceContent::decode(value).map_err(|e| format!("bad piece content: {e}"))?;
            let m = content.metadata;
            if m.length > MAX_PIECE_LEN_BYTES {
                return Err(format!("parent announced a {}-byte piece", m.length));
            }
            Ok(Answer::Piece(PieceHead {
                number: m.number,
                offset: m.offset,
                length: m.length,
                digest: m.digest,
                parent_id: m.parent_id,
                cost_secs: m.cost.as_secs(),
                created_at_secs: m.created_at.and_utc().timestamp(),
            }))
        }
        Tag::Error => {
            let e = VortexError::decode(value).map_err(|e| format!("bad error packet: {e}"))?;
            Ok(Answer::Refused(Refusal { code: RefusalCode::from_wire(e.code), message: e.message }))
        }
        other => Err(format!("unexpected vortex tag {other:?}")),
    }
}

/// A piece digest as Dragonfly's Rust dfdaemon writes it: `crc32:` and the crc in decimal.
pub fn crc_digest(crc: u32) -> String {
    format!("crc32:{crc}")
}

/// The crc in a `crc32:<decimal>` digest; `None` for any other algorithm or a malformed value.
pub fn parse_crc_digest(digest: &str) -> Option<u32> {
    let v = digest.strip_prefix("crc32:")?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(packet: &[u8]) -> (Tag, Vec<u8>) {
        let head: [u8; HEADER_SIZE] = packet[..HEADER_SIZE].try_into().unwrap();
        let (tag, len) = decode_header(&head).unwrap();
        assert_eq!(len as usize, packet.len() - HEADER_SIZE, "header length covers the value");
        (tag, packet[HEADER_SIZE..].to_vec())
    }

    const ID: &str = "8a4d6c0b1f2e3d4c5b6a79880716253443526170819a8b7c6d5e4f3a2b1c0d9e";

    #[test]
    fn request_round_trips_and_has_the_documented_layout() {
        let p = encode_request(ID, 7);
        assert_eq!(p.len(), HEADER_SIZE + 64 + 4);
        assert_eq!(p[1], 0, "tag 0 = DownloadPiece");
        assert_eq!(&p[2..6], &68u32.to_be_bytes());
        assert_eq!(&p[6..70], ID.as_bytes());
        assert_eq!(&p[70..74], &7u32.to_be_bytes());
        let (tag, value) = split(&p);
        assert_eq!(parse_request(tag, &value), Ok((ID.to_string(), 7)));
    }

    #[test]
    fn requests_with_bad_task_ids_or_tags_are_refused() {
        let check = |tag: Tag, value: Vec<u8>| {
            let r = parse_request(tag, &value).unwrap_err();
            assert_eq!(r.code, RefusalCode::InvalidArgument, "{r:?}");
        };
        let mut upper = encode_request(&ID.to_uppercase(), 1);
        check(Tag::DownloadPiece, upper.split_off(HEADER_SIZE));
        let mut dots = encode_request(&format!("../{}", &ID[3..]), 1);
        check(Tag::DownloadPiece, dots.split_off(HEADER_SIZE));
        check(Tag::DownloadPiece, vec![b'a'; 10]);
        check(Tag::PieceContent, encode_request(ID, 1).split_off(HEADER_SIZE));
    }

    #[test]
    fn piece_head_round_trips() {
        let head = PieceHead {
            number: 3,
            offset: 3 * 4194304,
            length: 4194304,
            digest: crc_digest(0xdeadbeef),
            parent_id: "127.0.0.2-host-peer".into(),
            cost_secs: 2,
            created_at_secs: 1_700_000_000,
        };
        let p = encode_piece_head(&head);
        assert_eq!(p[1], 1, "tag 1 = PieceContent");
        let (tag, value) = split(&p);
        assert_eq!(parse_answer(tag, &value), Ok(Answer::Piece(head)));
    }

    #[test]
    fn refusal_round_trips() {
        let r = Refusal::new(RefusalCode::NotFound, "no such piece");
        let p = encode_refusal(&r);
        assert_eq!(p[1], 255);
        let (tag, value) = split(&p);
        assert_eq!(parse_answer(tag, &value), Ok(Answer::Refused(r)));
    }

    #[test]
    fn oversized_values_and_unexpected_tags_are_rejected() {
        let mut head = [0u8; HEADER_SIZE];
        head[1] = 1;
        head[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_header(&head).is_err());
        assert!(parse_answer(Tag::DownloadPiece, &[]).is_err());
        assert!(parse_answer(Tag::PieceContent, &[0, 0, 0, 9, 1]).is_err());
    }

    #[test]
    fn crc_digests_are_decimal_like_dragonflys_rust_client() {
        assert_eq!(crc_digest(0x864bbb04), "crc32:2253110020");
        assert_eq!(parse_crc_digest("crc32:2253110020"), Some(0x864bbb04));
        for bad in ["crc32:", "crc32:12ab", "sha256:00", "crc32:99999999999"] {
            assert_eq!(parse_crc_digest(bad), None, "{bad}");
        }
    }
}
