//! The Stream RPC's messages on the wire without prost's payload copy, in
//! both directions and on both ends.
//!
//! A gRPC message is a 5-byte prefix (compressed flag, big-endian length)
//! and the protobuf encoding; a `StreamResponse { data }` or a
//! `StreamRequest { data }` is one field: tag `0x12` (field 2,
//! length-delimited), a varint length, the payload. prost (through tonic's
//! codec) encodes a message into one buffer, so the payload is copied on
//! the way out, and tonic's decoder gathers every HTTP/2 DATA frame into
//! its own buffer before decoding, so it is copied again on the way in.
//! The bytes on the wire are the same either way; this module builds and
//! reads them around the payload instead:
//!
//! - [`data_prefix`]: the few bytes before a payload (gRPC prefix, tag,
//!   length), so the daemon sends prefix and payload as two `Bytes` —
//!   the payload being the receive queue's slice of a TUN read — and
//!   hyper/h2 hand the payload to `writev` without copying it;
//! - [`encode_message`]: any other `StreamResponse`, prefixed (control
//!   frames are small);
//! - [`FrameDecoder`]: the receiving side of either direction —
//!   [`DownDecoder`] in the client, [`UpDecoder`] in the daemon. It is fed
//!   the HTTP/2 DATA frames' `Bytes` as they arrive and yields a data
//!   message's payload as slices of them ([`Part::Data`], possibly several
//!   per message: a message may be split at any byte), and every other
//!   message decoded ([`Part::Message`]). Only the headers of a data
//!   message (at most 16 bytes) are gathered across frames; a message that
//!   is not exactly one `data` field is gathered whole and decoded with
//!   prost, so any valid encoding decodes as prost would. It holds no
//!   buffer between messages (what an idle Stream keeps is its fields).
//!
//! The wire protocol is unchanged: a peer using tonic's codec on either
//! side interoperates (the tests decode with prost what [`data_prefix`]
//! builds, and feed the decoder what prost encodes).

use crate::v2::{StreamRequest, StreamResponse, stream_request, stream_response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{decode_varint, encode_varint, encoded_len_varint};
use std::marker::PhantomData;
use tonic::codegen::http;

/// The gRPC message prefix: compressed flag and big-endian length.
pub const GRPC_PREFIX: usize = 5;

/// The protobuf key of `StreamResponse.data` and `StreamRequest.data`:
/// field 2, wire type 2 (length-delimited).
const DATA_KEY: u8 = (2 << 3) | 2;

/// Most bytes before a data message's payload: the gRPC prefix, the key
/// and a varint of up to 10 bytes (a 64-bit length).
const MAX_DATA_HEAD: usize = GRPC_PREFIX + 1 + 10;

/// Largest message a [`FrameDecoder`] accepts (tonic's default decoding
/// limit, 4 MiB; the daemon's data messages are at most 64 KiB).
pub const MAX_MESSAGE: usize = 4 << 20;

/// The bytes that, followed by `len` payload bytes, make the gRPC message
/// `StreamResponse { data: <payload> }` — the same bytes prost and tonic
/// would write for it.
///
/// # Panics
/// If the message would exceed the gRPC length field (4 GiB); callers send
/// at most 64 KiB.
pub fn data_prefix(len: usize) -> Bytes {
    let message = 1 + encoded_len_varint(len as u64) + len;
    let message = u32::try_from(message).expect("a Stream data message fits the gRPC prefix");
    let mut head = BytesMut::with_capacity(MAX_DATA_HEAD);
    head.put_u8(0);
    head.put_u32(message);
    head.put_u8(DATA_KEY);
    encode_varint(len as u64, &mut head);
    head.freeze()
}

/// `message` as one gRPC message (prefix and protobuf encoding).
pub fn encode_message(message: &StreamResponse) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(GRPC_PREFIX + len);
    buf.put_u8(0);
    // A control frame is a few dozen bytes.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // `buf` has room for the whole encoding: this cannot fail.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// A Stream message type whose field 2 is `bytes data` in its `frame`
/// oneof: `StreamResponse` (down) and `StreamRequest` (up).
pub trait DataMessage: Message + Default {
    /// Which direction, for errors ("Stream response").
    const WHAT: &'static str;
    /// The message `{ data: payload }`.
    fn data(payload: Bytes) -> Self;
}

impl DataMessage for StreamResponse {
    const WHAT: &'static str = "Stream response";
    fn data(payload: Bytes) -> Self {
        StreamResponse {
            frame: Some(stream_response::Frame::Data(payload)),
        }
    }
}

impl DataMessage for StreamRequest {
    const WHAT: &'static str = "Stream request";
    fn data(payload: Bytes) -> Self {
        StreamRequest {
            frame: Some(stream_request::Frame::Data(payload)),
        }
    }
}

/// The HTTP path of the Stream RPC.
pub const STREAM_PATH: &str = "/tcpd.v2.SocketService/Stream";

/// A Stream RPC request carrying `body` (the up messages, already
/// gRPC-framed) with the headers a gRPC client sends: for callers that
/// drive the call below tonic's generated client.
pub fn stream_request(body: tonic::body::Body) -> http::Request<tonic::body::Body> {
    let mut request = http::Request::new(body);
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static(STREAM_PATH);
    *request.version_mut() = http::Version::HTTP_2;
    let headers = request.headers_mut();
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    request
}

/// What a [`FrameDecoder`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Part<M> {
    /// Payload bytes of a `data` message, in order: a slice of a buffer fed
    /// to the decoder (a message's payload may come in several parts).
    Data(Bytes),
    /// Any other message (`opened`, `eof`, `flushed`, `open`, `close`, a
    /// `data` message encoded in another way, an empty one), decoded.
    Message(M),
}

/// What the client's [`DownDecoder`] yields.
pub type DownPart = Part<StreamResponse>;
/// What the daemon's [`UpDecoder`] yields.
pub type UpPart = Part<StreamRequest>;

/// Where a [`FrameDecoder`] is within the message stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Gathering a message's first bytes into `head`.
    Head,
    /// Inside a `data` message's payload: this many bytes to come.
    Payload(usize),
    /// Inside another message: this many bytes to gather into `whole`.
    Whole(usize),
}

/// The decoder of one direction of a Stream; see the module docs. Feed it
/// each DATA frame's bytes ([`FrameDecoder::feed`]), then take parts
/// ([`FrameDecoder::next_part`]) until it has none.
///
/// Errors (the stream cannot go on after one): a compressed message
/// (`Internal`: no encoding is ever negotiated), a message longer than
/// [`MAX_MESSAGE`] (`ResourceExhausted`, judged from its prefix, before
/// any of it is gathered), a message prost cannot decode (`Internal`).
#[derive(Debug)]
pub struct FrameDecoder<M> {
    at: At,
    /// The fed bytes not yet walked.
    input: Bytes,
    /// A message's first bytes, gathered until they say what it is.
    head: [u8; MAX_DATA_HEAD],
    head_len: u8,
    /// A message that is not one `data` field, gathered whole (no
    /// allocation while empty).
    whole: BytesMut,
    _message: PhantomData<fn() -> M>,
}

/// The client's decoder of the Stream's down direction.
pub type DownDecoder = FrameDecoder<StreamResponse>;
/// The daemon's decoder of the Stream's up direction.
pub type UpDecoder = FrameDecoder<StreamRequest>;

impl<M> Default for FrameDecoder<M> {
    fn default() -> Self {
        FrameDecoder {
            at: At::Head,
            input: Bytes::new(),
            head: [0; MAX_DATA_HEAD],
            head_len: 0,
            whole: BytesMut::new(),
            _message: PhantomData,
        }
    }
}

/// The error of a malformed stream (tonic reports its own decoding
/// failures as `Internal` too).
fn malformed<M: DataMessage>(what: &str) -> tonic::Status {
    tonic::Status::internal(format!("malformed {}: {what}", M::WHAT))
}

impl<M: DataMessage> FrameDecoder<M> {
    /// A decoder at the start of a stream.
    pub fn new() -> FrameDecoder<M> {
        FrameDecoder::default()
    }

    /// The length of the message being gathered whole, if one is (a message
    /// that is not one `data` field, partly received): the receiver may
    /// charge it to a budget while it is held.
    pub fn gathering(&self) -> Option<usize> {
        match self.at {
            At::Whole(remaining) => Some(self.whole.len() + remaining),
            _ => None,
        }
    }

    /// Adds the next received bytes (one HTTP/2 DATA frame's payload). The
    /// bytes fed before must have been walked ([`DownDecoder::next_part`]
    /// returned `Ok(None)`); if not, they are kept in front, at the cost of
    /// a copy.
    pub fn feed(&mut self, bytes: Bytes) {
        if self.input.is_empty() {
            self.input = bytes;
        } else {
            let mut joined = BytesMut::with_capacity(self.input.len() + bytes.len());
            joined.extend_from_slice(&self.input);
            joined.extend_from_slice(&bytes);
            self.input = joined.freeze();
        }
    }

    /// Whether the stream may end here: no message is partly received.
    pub fn at_boundary(&self) -> bool {
        self.at == At::Head && self.head_len == 0 && self.input.is_empty()
    }

    /// The next part the fed bytes complete: `Ok(None)` when they are all
    /// walked (feed more).
    pub fn next_part(&mut self) -> Result<Option<Part<M>>, tonic::Status> {
        loop {
            match self.at {
                At::Payload(remaining) => {
                    if self.input.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(self.input.len());
                    let part = self.input.split_to(n);
                    self.at = if n == remaining {
                        At::Head
                    } else {
                        At::Payload(remaining - n)
                    };
                    return Ok(Some(Part::Data(part)));
                }
                At::Whole(remaining) => {
                    if self.input.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(self.input.len());
                    self.whole.extend_from_slice(&self.input.split_to(n));
                    if n < remaining {
                        self.at = At::Whole(remaining - n);
                        return Ok(None);
                    }
                    self.at = At::Head;
                    return decode(std::mem::take(&mut self.whole).freeze()).map(Some);
                }
                At::Head => {
                    if let Some(part) = self.walk_head()? {
                        return Ok(Some(part));
                    }
                    if self.at == At::Head {
                        // The head needs more bytes.
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Gathers a message's first bytes until they tell a `data` message
    /// (then `at` becomes `Payload`) from any other (`Whole`, with the
    /// gathered bytes moved into `whole`); an empty message is returned at
    /// once.
    fn walk_head(&mut self) -> Result<Option<Part<M>>, tonic::Status> {
        loop {
            if usize::from(self.head_len) >= GRPC_PREFIX {
                let head = &self.head[..usize::from(self.head_len)];
                if head[0] != 0 {
                    // No encoding is negotiated: neither end compresses.
                    return Err(malformed::<M>("compressed message without grpc-encoding"));
                }
                let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                if len > MAX_MESSAGE {
                    return Err(tonic::Status::resource_exhausted(format!(
                        "{} of {len} bytes exceeds the {MAX_MESSAGE}-byte limit",
                        M::WHAT
                    )));
                }
                let body = &head[GRPC_PREFIX..];
                if len == 0 {
                    self.head_len = 0;
                    return Ok(Some(Part::Message(M::default())));
                }
                match data_payload_len(body, len) {
                    // The head is judged after every byte past the prefix,
                    // so it ends exactly where the payload starts.
                    Judged::Data(0) => {
                        self.head_len = 0;
                        return Ok(Some(Part::Message(M::data(Bytes::new()))));
                    }
                    Judged::Data(payload) => {
                        self.head_len = 0;
                        self.at = At::Payload(payload);
                        return Ok(None);
                    }
                    Judged::Other => {
                        // Gathered whole (a control frame: a few bytes), in
                        // one allocation of its length.
                        self.whole = BytesMut::with_capacity(len);
                        self.whole.extend_from_slice(body);
                        let gathered = body.len();
                        self.head_len = 0;
                        if gathered == len {
                            return decode(std::mem::take(&mut self.whole).freeze()).map(Some);
                        }
                        self.at = At::Whole(len - gathered);
                        return Ok(None);
                    }
                    Judged::NeedMore => {}
                }
            }
            // One more byte of head (at most MAX_DATA_HEAD are ever needed:
            // the prefix, the key, a 10-byte varint).
            if self.input.is_empty() {
                return Ok(None);
            }
            if self.head_len == 0 && self.input.len() >= GRPC_PREFIX {
                // Common case: the prefix is in one piece.
                self.head[..GRPC_PREFIX].copy_from_slice(&self.input[..GRPC_PREFIX]);
                self.input.advance(GRPC_PREFIX);
                self.head_len = GRPC_PREFIX as u8;
                continue;
            }
            self.head[usize::from(self.head_len)] = self.input[0];
            self.input.advance(1);
            self.head_len += 1;
        }
    }
}

/// What a message's first bytes say.
enum Judged {
    /// Exactly one `data` field, whose key and length are all of `body`:
    /// the payload's length.
    Data(usize),
    /// Anything else: decode it whole.
    Other,
    /// Not enough bytes yet to tell.
    NeedMore,
}

/// Judges the gathered first bytes `body` of a message of `len` bytes.
fn data_payload_len(body: &[u8], len: usize) -> Judged {
    let Some((&key, rest)) = body.split_first() else {
        return Judged::NeedMore;
    };
    if key != DATA_KEY {
        return Judged::Other;
    }
    // The varint: up to 10 bytes, each but the last with the high bit set.
    let Some(last) = rest.iter().take(10).position(|b| b & 0x80 == 0) else {
        // No end yet: more bytes may bring it, unless they cannot fit.
        return if rest.len() >= 10 || 1 + rest.len() >= len {
            Judged::Other
        } else {
            Judged::NeedMore
        };
    };
    let head = 1 + last + 1;
    if head > len {
        return Judged::Other;
    }
    match decode_varint(&mut &rest[..=last]).map(usize::try_from) {
        Ok(Ok(payload)) if head + payload == len && head == body.len() => Judged::Data(payload),
        _ => Judged::Other,
    }
}

fn decode<M: DataMessage>(message: Bytes) -> Result<Part<M>, tonic::Status> {
    M::decode(message)
        .map(Part::Message)
        .map_err(|e| malformed::<M>(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2;

    fn data_message(data: Bytes) -> StreamResponse {
        StreamResponse::data(data)
    }

    /// The bytes tonic's prost codec sends for `message`.
    fn prost_wire(message: &StreamResponse) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut wire = vec![0];
        wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
        wire.extend_from_slice(&body);
        wire
    }

    fn payload(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
            .into()
    }

    /// A down stream as the daemon sends it: control frames, data frames of
    /// sizes around every varint length boundary, an empty message.
    fn sample() -> Vec<StreamResponse> {
        let mut messages = vec![StreamResponse {
            frame: Some(stream_response::Frame::Opened(v2::StreamOpened {
                handle: 7,
                local: None,
                peer: None,
            })),
        }];
        for (i, len) in [1, 127, 128, 16_383, 16_384, 65_536, 3, 0]
            .into_iter()
            .enumerate()
        {
            messages.push(data_message(payload(len, i as u8)));
            if i % 3 == 0 {
                messages.push(StreamResponse {
                    frame: Some(stream_response::Frame::Flushed(1 << (7 * i))),
                });
            }
        }
        messages.push(StreamResponse::default());
        messages.push(StreamResponse {
            frame: Some(stream_response::Frame::Eof(true)),
        });
        messages
    }

    /// The wire bytes of `messages` as the daemon sends them: data as
    /// `data_prefix` + payload, others with `encode_message`.
    fn daemon_wire(messages: &[StreamResponse]) -> Vec<u8> {
        let mut wire = Vec::new();
        for m in messages {
            match &m.frame {
                Some(stream_response::Frame::Data(d)) => {
                    wire.extend_from_slice(&data_prefix(d.len()));
                    wire.extend_from_slice(d);
                }
                _ => wire.extend_from_slice(&encode_message(m)),
            }
        }
        wire
    }

    /// A down stream as the reader sees it: received bytes (adjacent data
    /// messages run together, as they do for the reader) and the other
    /// messages.
    #[derive(PartialEq)]
    enum Item {
        Data(Vec<u8>),
        Other(StreamResponse),
    }

    impl std::fmt::Debug for Item {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                // Lengths and a checksum, not megabytes of payload.
                Item::Data(d) => write!(
                    f,
                    "Data({} bytes, sum {})",
                    d.len(),
                    d.iter().map(|&b| u64::from(b)).sum::<u64>()
                ),
                Item::Other(m) => write!(f, "{m:?}"),
            }
        }
    }

    fn push_data(items: &mut Vec<Item>, bytes: &[u8]) {
        match items.last_mut() {
            Some(Item::Data(d)) => d.extend_from_slice(bytes),
            _ if bytes.is_empty() => {}
            _ => items.push(Item::Data(bytes.to_vec())),
        }
    }

    fn items(messages: &[StreamResponse]) -> Vec<Item> {
        let mut items = Vec::new();
        for m in messages {
            match &m.frame {
                Some(stream_response::Frame::Data(d)) => push_data(&mut items, d),
                _ => items.push(Item::Other(m.clone())),
            }
        }
        items
    }

    /// Feeds `wire` to a decoder in pieces cut at `cuts`, handing every
    /// part to `part` (data parts are never empty); the stream must end
    /// between messages.
    fn feed_cut<M: DataMessage>(wire: &[u8], cuts: &[usize], mut part: impl FnMut(Part<M>)) {
        let mut decoder = FrameDecoder::<M>::new();
        let mut last = 0;
        for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
            decoder.feed(Bytes::copy_from_slice(&wire[last..cut]));
            last = cut;
            while let Some(p) = decoder.next_part().expect("valid stream") {
                if let Part::Data(bytes) = &p {
                    assert!(!bytes.is_empty(), "no empty data parts");
                }
                part(p);
            }
        }
        assert!(decoder.at_boundary(), "stream ends between messages");
        assert_eq!(decoder.gathering(), None);
    }

    /// Decodes `wire` fed in pieces cut at `cuts`.
    fn decode_cut(wire: &[u8], cuts: &[usize]) -> Vec<Item> {
        let mut out = Vec::new();
        feed_cut(wire, cuts, |part| match part {
            DownPart::Data(bytes) => push_data(&mut out, &bytes),
            DownPart::Message(m) => out.extend(items(&[m])),
        });
        out
    }

    #[test]
    fn the_data_prefix_is_what_prost_writes() {
        for len in [0, 1, 127, 128, 16_383, 16_384, 65_536, 2_097_152] {
            let d = payload(len, 1);
            let mut ours = data_prefix(len).to_vec();
            ours.extend_from_slice(&d);
            assert_eq!(ours, prost_wire(&data_message(d)), "payload of {len} bytes");
        }
        let eof = StreamResponse {
            frame: Some(stream_response::Frame::Eof(true)),
        };
        assert_eq!(encode_message(&eof).to_vec(), prost_wire(&eof));
    }

    #[test]
    fn whole_frames_decode_to_the_messages_and_payloads_are_not_copied() {
        let messages = sample();
        let wire = daemon_wire(&messages);
        assert_eq!(decode_cut(&wire, &[]), items(&messages));
        // Prefix and payload as two frames, as the daemon sends them: the
        // payload part is the fed buffer itself.
        let d = payload(65_536, 9);
        let mut decoder = DownDecoder::new();
        decoder.feed(data_prefix(d.len()));
        assert_eq!(decoder.next_part().unwrap(), None);
        decoder.feed(d.clone());
        match decoder.next_part().unwrap() {
            Some(DownPart::Data(part)) => {
                assert!(part == d, "the payload");
                assert_eq!(part.as_ptr(), d.as_ptr(), "a slice of the fed frame");
            }
            _ => panic!("expected the payload"),
        }
        assert!(decoder.at_boundary());
    }

    #[test]
    fn a_stream_cut_at_every_byte_decodes_the_same() {
        // Small messages so that every cut position is tried in reasonable
        // time; the varint boundaries matter most (1 and 2 bytes here).
        let messages: Vec<StreamResponse> = [
            StreamResponse {
                frame: Some(stream_response::Frame::Flushed(300)),
            },
            data_message(payload(130, 3)),
            data_message(payload(1, 4)),
            StreamResponse::default(),
            data_message(payload(0, 0)),
            StreamResponse {
                frame: Some(stream_response::Frame::Eof(true)),
            },
        ]
        .into();
        let wire = daemon_wire(&messages);
        let expected = items(&messages);
        for a in 0..=wire.len() {
            assert_eq!(decode_cut(&wire, &[a]), expected, "cut at {a}");
            for b in (a..=wire.len()).step_by(7) {
                assert_eq!(decode_cut(&wire, &[a, b]), expected, "cuts at {a}, {b}");
            }
        }
        // Byte by byte.
        let every: Vec<usize> = (1..wire.len()).collect();
        assert_eq!(decode_cut(&wire, &every), expected);
    }

    #[test]
    fn prost_encoded_streams_decode_alike() {
        // What tonic's codec would send (the same bytes for data), and a
        // data field encoded with a padded varint and followed by another
        // field: decoded whole, as prost would.
        let messages = sample();
        let mut wire = Vec::new();
        for m in &messages {
            wire.extend(prost_wire(m));
        }
        assert_eq!(decode_cut(&wire, &[3, 9, 70_000]), items(&messages));
        let mut odd = vec![0, 0, 0, 0, 7, DATA_KEY, 0x82, 0x00, b'h', b'i', 0x18, 1];
        odd[4] = (odd.len() - GRPC_PREFIX) as u8;
        let decoded = decode_cut(&odd, &[6]);
        let eof = StreamResponse {
            frame: Some(stream_response::Frame::Eof(true)),
        };
        assert_eq!(decoded, items(&[eof]));
    }

    #[test]
    fn bad_streams_fail_without_panicking() {
        let mut compressed = DownDecoder::new();
        compressed.feed(Bytes::from_static(&[1, 0, 0, 0, 1, 0x18]));
        assert!(compressed.next_part().is_err());
        let mut huge = DownDecoder::new();
        huge.feed(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]));
        assert!(huge.next_part().is_err());
        let mut garbage = DownDecoder::new();
        garbage.feed(Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff]));
        assert!(garbage.next_part().is_err());
        let mut truncated = DownDecoder::new();
        truncated.feed(data_prefix(10));
        truncated.feed(Bytes::from_static(b"abc"));
        while let Ok(Some(_)) = truncated.next_part() {}
        assert!(!truncated.at_boundary());
    }

    /// The bytes tonic's prost codec sends for an up message.
    fn up_wire(messages: &[StreamRequest]) -> Vec<u8> {
        let mut wire = Vec::new();
        for m in messages {
            let body = m.encode_to_vec();
            wire.push(0);
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(&body);
        }
        wire
    }

    fn up_frame(frame: stream_request::Frame) -> StreamRequest {
        StreamRequest { frame: Some(frame) }
    }

    /// An up stream as clients send it: `open`, data around the varint
    /// boundaries, a `write` with flags, `flush`, an option, `close`.
    fn up_sample() -> Vec<StreamRequest> {
        let mut messages = vec![up_frame(stream_request::Frame::Open(v2::StreamOpen {
            how: Some(v2::stream_open::How::Accept(v2::StreamAccept {
                listener: 9,
            })),
        }))];
        for (i, len) in [1, 127, 128, 16_384, 65_536, 0].into_iter().enumerate() {
            messages.push(StreamRequest::data(payload(len, i as u8)));
        }
        messages.push(up_frame(stream_request::Frame::Write(v2::StreamWrite {
            data: payload(70_000, 5),
            flags: 1,
        })));
        messages.push(up_frame(stream_request::Frame::Flush(true)));
        messages.push(up_frame(stream_request::Frame::SetOption(
            v2::OptionSetting {
                option: 3,
                value: None,
            },
        )));
        messages.push(StreamRequest::default());
        messages.push(up_frame(stream_request::Frame::Close(v2::StreamClose {
            consumed: 12,
            abort: true,
        })));
        messages
    }

    /// Decodes an up `wire` fed in pieces cut at `cuts`: the messages, data
    /// payloads joined per message (each data message of the sample is
    /// followed by a non-data one or another data message: joined runs
    /// compare by bytes).
    fn up_decode_cut(wire: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<StreamRequest>) {
        let (mut data, mut others) = (Vec::new(), Vec::new());
        feed_cut(wire, cuts, |part| match part {
            Part::Data(bytes) => data.extend_from_slice(&bytes),
            Part::Message(m) => others.push(m),
        });
        (data, others)
    }

    #[test]
    fn up_streams_decode_as_prost_at_any_cut() {
        let messages = up_sample();
        let wire = up_wire(&messages);
        let mut want_data = Vec::new();
        let mut want_others = Vec::new();
        for m in &messages {
            match &m.frame {
                Some(stream_request::Frame::Data(d)) if !d.is_empty() => {
                    want_data.extend_from_slice(d)
                }
                _ => want_others.push(m.clone()),
            }
        }
        let want = (want_data, want_others);
        assert_eq!(up_decode_cut(&wire, &[]), want);
        for cut in [1, 4, 5, 6, 7, 8, 40, 1000, 70_000, 100_000, wire.len() - 1] {
            assert_eq!(up_decode_cut(&wire, &[cut]), want, "cut at {cut}");
        }
        let every: Vec<usize> = (1..wire.len()).step_by(997).collect();
        assert_eq!(up_decode_cut(&wire, &every), want);
        // Prefix and payload as the frames they came in: the payload is a
        // slice of the fed frame, not a copy.
        let d = payload(65_536, 2);
        let mut decoder = UpDecoder::new();
        let one = up_wire(&[StreamRequest::data(d.clone())]);
        let head = data_prefix(d.len()).len();
        decoder.feed(Bytes::copy_from_slice(&one[..head]));
        assert_eq!(decoder.next_part().unwrap(), None);
        let frame = Bytes::copy_from_slice(&one[head..]);
        decoder.feed(frame.clone());
        match decoder.next_part().unwrap() {
            Some(Part::Data(part)) => {
                assert!(part == d);
                assert_eq!(part.as_ptr(), frame.as_ptr(), "a slice of the fed frame");
            }
            other => panic!("expected the payload, got {other:?}"),
        }
    }

    #[test]
    fn an_up_message_gathered_whole_says_its_length() {
        let write = up_frame(stream_request::Frame::Write(v2::StreamWrite {
            data: payload(100_000, 1),
            flags: 1,
        }));
        let wire = up_wire(std::slice::from_ref(&write));
        let mut decoder = UpDecoder::new();
        decoder.feed(Bytes::copy_from_slice(&wire[..100]));
        assert_eq!(decoder.next_part().unwrap(), None);
        assert_eq!(decoder.gathering(), Some(wire.len() - GRPC_PREFIX));
        decoder.feed(Bytes::copy_from_slice(&wire[100..]));
        assert_eq!(decoder.next_part().unwrap(), Some(Part::Message(write)));
        assert_eq!(decoder.gathering(), None);
        assert!(decoder.at_boundary());
    }

    #[test]
    fn bad_up_streams_fail_without_panicking_or_gathering() {
        let open = up_wire(&up_sample()[..1]);
        let bad = |tail: &[u8]| {
            let mut decoder = UpDecoder::new();
            let mut wire = open.clone();
            wire.extend_from_slice(tail);
            decoder.feed(Bytes::from(wire));
            let first = decoder.next_part();
            assert!(matches!(first, Ok(Some(Part::Message(_)))), "{first:?}");
            let mut last = Ok(None);
            for _ in 0..4 {
                last = decoder.next_part();
                if last.is_err() {
                    break;
                }
            }
            (last, decoder.gathering())
        };
        // Compressed flag: no encoding was negotiated.
        let (r, _) = bad(&[1, 0, 0, 0, 2, 0x18, 1]);
        assert_eq!(r.unwrap_err().code(), tonic::Code::Internal);
        // A prefix past the limit fails at once: nothing is gathered.
        let (r, gathering) = bad(&[0, 0x7f, 0xff, 0xff, 0xff, 0x3a]);
        assert_eq!(r.unwrap_err().code(), tonic::Code::ResourceExhausted);
        assert_eq!(gathering, None);
        let over = (MAX_MESSAGE as u32 + 1).to_be_bytes();
        let (r, _) = bad(&[0, over[0], over[1], over[2], over[3]]);
        assert_eq!(r.unwrap_err().code(), tonic::Code::ResourceExhausted);
        // Not protobuf (a truncated varint field, a bad wire type).
        let (r, _) = bad(&[0, 0, 0, 0, 2, 0x18, 0xff]);
        assert_eq!(r.unwrap_err().code(), tonic::Code::Internal);
        let (r, _) = bad(&[0, 0, 0, 0, 1, 0x0f]);
        assert_eq!(r.unwrap_err().code(), tonic::Code::Internal);
        // A data field whose length runs past its message: decoded whole,
        // and refused by prost.
        let (r, _) = bad(&[0, 0, 0, 0, 3, DATA_KEY, 9, b'x']);
        assert_eq!(r.unwrap_err().code(), tonic::Code::Internal);
        // Truncated: the stream ends inside a message.
        let mut truncated = UpDecoder::new();
        truncated.feed(Bytes::from(open.clone()));
        truncated.feed(Bytes::from_static(&[0, 0, 0, 0, 9, DATA_KEY, 7, b'a']));
        while let Ok(Some(_)) = truncated.next_part() {}
        assert!(!truncated.at_boundary());
    }
}
