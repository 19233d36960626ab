//! Makes any client's `:authority` acceptable to the HTTP/2 server.
//!
//! gRPC clients put different things in `:authority` when they talk over a
//! Unix socket: grpc-go and older C-core send `localhost`, C-core ≥ 1.58
//! (Python, C++, Ruby...) the percent-encoded socket path
//! (`%2Frun%2Ftcpd%2Ftcpd.sock`), grpc-java the raw path. The `h2` crate
//! under tonic parses `:authority` as an RFC 3986 authority and resets every
//! stream whose value does not parse (`RST_STREAM` PROTOCOL_ERROR), and has no
//! option to relax that. tcpd has no use for the authority (there is one
//! server behind the socket), so the session's inbound bytes pass through an
//! [`AuthorityFix`] that replaces an unparsable `:authority` with
//! [`REPLACEMENT`] before `h2` sees it.
//!
//! How (RFC 9113 §4, §6.2, §6.10; RFC 7541): the fix follows the client's
//! frames; every frame but HEADERS/CONTINUATION passes through untouched (and
//! without a copy: [`AuthorityFix::pass_len`] scans it in the caller's
//! buffer). Header blocks are collected whole and decoded with an HPACK
//! decoder that mirrors the client's encoder (its dynamic table). When the
//! client's first header block has a valid authority, it goes on byte for
//! byte and the fix stops following the connection (a gRPC channel sends
//! one authority for its life; decoding every request would cost a fifth
//! of the daemon's time on unary calls). When it needs a change, that
//! block and every later one are re-encoded with literal representations
//! that neither use nor touch `h2`'s dynamic table (RFC 7541 §6.2.2), so the
//! tables no longer need to agree. A block that does not decode is passed on
//! as it is while nothing was rewritten (`h2` then reports the client's
//! COMPRESSION_ERROR itself) and fails the session once blocks are being
//! rewritten. Memory is bounded: a header block larger than
//! [`MAX_BLOCK`] fails the session.

use loona_hpack::Decoder;

/// The `:authority` given to requests whose own does not parse (what
/// grpc-go sends over a Unix socket).
pub const REPLACEMENT: &[u8] = b"localhost";

/// Largest header block (all of its HEADERS and CONTINUATION frames) the fix
/// collects; the daemon's HTTP/2 server accepts far smaller header lists.
pub const MAX_BLOCK: usize = 256 * 1024;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PREFACE_LEN: usize = PREFACE.len();
/// Frame header length (RFC 9113 §4.1).
const FRAME_HEADER_LEN: usize = 9;
/// Frame types (RFC 9113 §6.2, §6.10).
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
/// Frame flags (RFC 9113 §6.2).
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Every HTTP/2 endpoint accepts frames of this size (RFC 9113 §4.2: the
/// initial SETTINGS_MAX_FRAME_SIZE, which can only grow).
const MIN_MAX_FRAME: usize = 16_384;
/// The HPACK dynamic table size the server allows (RFC 7541 §4.2; RFC 9113
/// §6.5.2 initial SETTINGS_HEADER_TABLE_SIZE, which the daemon keeps).
const TABLE_SIZE: usize = 4096;

/// Why a session's byte stream had to be cut.
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    #[error("HTTP/2 header block larger than {MAX_BLOCK} bytes")]
    BlockTooLarge,
    #[error("undecodable HPACK header block: {0:?}")]
    Hpack(loona_hpack::decoder::DecoderError),
    #[error("CONTINUATION frame outside a header block")]
    StrayContinuation,
    #[error("malformed HEADERS frame after a rewritten header block")]
    MalformedAfterRewrite,
}

impl From<FixError> for std::io::Error {
    fn from(e: FixError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// A header block being collected.
#[derive(Debug)]
struct Block {
    stream_id: u32,
    end_stream: bool,
    /// The block's frames as received (delivered as they are when no
    /// rewrite is needed).
    raw: Vec<u8>,
    /// The header block fragments, concatenated.
    fragment: Vec<u8>,
}

/// The inbound half of a session, as the HTTP/2 server must see it; see the
/// module docs. Feed it with [`pass_len`](Self::pass_len) and
/// [`absorb`](Self::absorb), drain it with [`take`](Self::take).
pub struct AuthorityFix {
    preface_left: usize,
    /// Payload bytes of a passed-through frame still to come.
    payload_left: usize,
    /// Input not yet processed: an incomplete frame header or header frame.
    stash: Vec<u8>,
    /// Processed bytes waiting for the reader.
    out: Vec<u8>,
    out_pos: usize,
    /// `None` once a block failed to decode while nothing was rewritten:
    /// from then on everything passes through.
    decoder: Option<Decoder<'static>>,
    rewriting: bool,
    block: Option<Block>,
}

impl std::fmt::Debug for AuthorityFix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityFix")
            .field("tracking", &self.decoder.is_some())
            .field("rewriting", &self.rewriting)
            .field("stash", &self.stash.len())
            .field("out", &(self.out.len() - self.out_pos))
            .finish_non_exhaustive()
    }
}

impl Default for AuthorityFix {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthorityFix {
    pub fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        AuthorityFix {
            preface_left: PREFACE_LEN,
            payload_left: 0,
            stash: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            decoder: Some(decoder),
            rewriting: false,
            block: None,
        }
    }

    /// How many leading bytes of `data` (fresh input) go to the server as
    /// they are; the rest must be given to [`absorb`](Self::absorb).
    /// Returns 0 while processed bytes wait in [`take`](Self::take) or
    /// input waits in the stash, so order is kept.
    pub fn pass_len(&mut self, data: &[u8]) -> usize {
        if self.decoder.is_none() && !self.rewriting {
            // Not tracking: everything passes, in order behind what waits.
            return if self.pending() == 0 && self.stash.is_empty() {
                data.len()
            } else {
                0
            };
        }
        if self.pending() != 0 || !self.stash.is_empty() {
            return 0;
        }
        let mut i = 0;
        while i < data.len() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(data.len() - i);
                self.preface_left -= n;
                i += n;
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(data.len() - i);
                self.payload_left -= n;
                i += n;
            } else {
                let Some(header) = data.get(i..i + FRAME_HEADER_LEN) else {
                    break;
                };
                let (len, kind, ..) = parse_header(header);
                if kind == HEADERS || kind == CONTINUATION {
                    break;
                }
                self.payload_left = len;
                i += FRAME_HEADER_LEN;
            }
        }
        i
    }

    /// Takes input that [`pass_len`](Self::pass_len) did not pass and
    /// processes as much of it as it can.
    pub fn absorb(&mut self, data: &[u8]) -> Result<(), FixError> {
        self.stash.extend_from_slice(data);
        let mut i = 0;
        let result = loop {
            let rest = &self.stash[i..];
            if rest.is_empty() {
                break Ok(());
            }
            if self.decoder.is_none() && !self.rewriting {
                self.out.extend_from_slice(rest);
                i = self.stash.len();
                continue;
            }
            if self.preface_left > 0 || self.payload_left > 0 {
                let left = if self.preface_left > 0 {
                    &mut self.preface_left
                } else {
                    &mut self.payload_left
                };
                let n = (*left).min(rest.len());
                *left -= n;
                self.out.extend_from_slice(&rest[..n]);
                i += n;
                continue;
            }
            let Some(header) = rest.get(..FRAME_HEADER_LEN) else {
                break Ok(());
            };
            let (len, kind, flags, stream_id) = parse_header(header);
            if kind != HEADERS && kind != CONTINUATION {
                self.out.extend_from_slice(header);
                self.payload_left = len;
                i += FRAME_HEADER_LEN;
                continue;
            }
            let collected = self.block.as_ref().map_or(0, |b| b.raw.len());
            if collected + FRAME_HEADER_LEN + len > MAX_BLOCK {
                break Err(FixError::BlockTooLarge);
            }
            let Some(frame) = rest.get(..FRAME_HEADER_LEN + len) else {
                break Ok(());
            };
            let frame = frame.to_vec();
            i += frame.len();
            if let Err(e) = self.header_frame(&frame, kind, flags, stream_id) {
                break Err(e);
            }
        };
        self.stash.drain(..i);
        result
    }

    /// Bytes waiting in [`take`](Self::take).
    pub fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Moves processed bytes into `dst`; returns how many.
    pub fn take(&mut self, dst: &mut [u8]) -> usize {
        let n = self.pending().min(dst.len());
        dst[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        n
    }

    /// One whole HEADERS or CONTINUATION frame.
    fn header_frame(
        &mut self,
        frame: &[u8],
        kind: u8,
        flags: u8,
        stream_id: u32,
    ) -> Result<(), FixError> {
        let payload = &frame[FRAME_HEADER_LEN..];
        let fragment = if kind == HEADERS {
            if self.block.is_some() {
                // A new HEADERS inside a block: h2 reports the error itself.
                return self.give_up(frame);
            }
            match headers_fragment(payload, flags) {
                Some(f) => f,
                None => return self.give_up(frame),
            }
        } else {
            match &self.block {
                Some(b) if b.stream_id == stream_id => payload,
                _ if self.rewriting => return Err(FixError::StrayContinuation),
                _ => return self.give_up(frame),
            }
        };
        let block = self.block.get_or_insert_with(|| Block {
            stream_id,
            end_stream: flags & END_STREAM != 0,
            raw: Vec::new(),
            fragment: Vec::new(),
        });
        block.raw.extend_from_slice(frame);
        block.fragment.extend_from_slice(fragment);
        if flags & END_HEADERS != 0 {
            let block = self.block.take().expect("block in progress");
            self.finish(block)?;
        }
        Ok(())
    }

    /// Stops tracking: `frame` and everything after it pass through; the
    /// server judges the malformed frame itself. Once a block was rewritten
    /// that is no longer possible (the server's HPACK table follows the
    /// rewritten blocks, not the client's): the session is cut, as the
    /// server would cut it for such a frame (RFC 9113 §6.2, §6.10: a
    /// connection error). Found by the `http2_authority` fuzz target: a
    /// HEADERS frame inside a block, or with bad padding, after a rewrite
    /// (a debug assertion before).
    fn give_up(&mut self, frame: &[u8]) -> Result<(), FixError> {
        if self.rewriting {
            return Err(FixError::MalformedAfterRewrite);
        }
        self.decoder = None;
        if let Some(block) = self.block.take() {
            self.out.extend_from_slice(&block.raw);
        }
        self.out.extend_from_slice(frame);
        Ok(())
    }

    /// A complete header block: pass it on or re-encode it.
    fn finish(&mut self, block: Block) -> Result<(), FixError> {
        let Some(decoder) = self.decoder.as_mut() else {
            self.out.extend_from_slice(&block.raw);
            return Ok(());
        };
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut needs_fix = false;
        let decoded = decoder.decode_with_cb(&block.fragment, |name, value| {
            let bad = &name[..] == b":authority" && !valid_authority(&value);
            needs_fix |= bad;
            let value = if bad { REPLACEMENT } else { &value[..] };
            fields.push((name.into_owned(), value.to_vec()));
        });
        if let Err(e) = decoded {
            if self.rewriting {
                return Err(FixError::Hpack(e));
            }
            self.decoder = None;
            self.out.extend_from_slice(&block.raw);
            return Ok(());
        }
        if !needs_fix && !self.rewriting {
            // A client whose first request carries a valid authority is
            // taken to keep it (gRPC channels send one authority for their
            // life): stop following it, so it pays nothing more. Should a
            // later request change to an unparsable one, h2 refuses that
            // stream as it would without this fix.
            self.decoder = None;
            self.out.extend_from_slice(&block.raw);
            return Ok(());
        }
        if !self.rewriting {
            tracing::debug!("a client's :authority does not parse: rewriting its header blocks");
        }
        self.rewriting = true;
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for (name, value) in &fields {
            encode_literal(name, value, &mut encoded);
        }
        let mut chunks = encoded.chunks(MIN_MAX_FRAME).peekable();
        let mut first = true;
        // An empty block still needs its HEADERS frame.
        let empty: &[u8] = &[];
        if chunks.peek().is_none() {
            write_frame(
                &mut self.out,
                HEADERS,
                END_HEADERS | if block.end_stream { END_STREAM } else { 0 },
                block.stream_id,
                empty,
            );
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let (kind, mut flags) = if first {
                (HEADERS, if block.end_stream { END_STREAM } else { 0 })
            } else {
                (CONTINUATION, 0)
            };
            if last {
                flags |= END_HEADERS;
            }
            write_frame(&mut self.out, kind, flags, block.stream_id, chunk);
            first = false;
        }
        Ok(())
    }
}

/// (payload length, type, flags, stream id) of a frame header (RFC 9113 §4.1).
fn parse_header(h: &[u8]) -> (usize, u8, u8, u32) {
    let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
    let stream_id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    (len, h[3], h[4], stream_id)
}

/// The header block fragment of a HEADERS payload, without padding and
/// priority fields (RFC 9113 §6.2); `None` when they do not fit.
fn headers_fragment(payload: &[u8], flags: u8) -> Option<&[u8]> {
    let (pad, mut rest) = if flags & PADDED != 0 {
        let (&pad, rest) = payload.split_first()?;
        (usize::from(pad), rest)
    } else {
        (0, payload)
    };
    if flags & PRIORITY != 0 {
        rest = rest.get(5..)?;
    }
    rest.get(..rest.len().checked_sub(pad)?)
}

fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A "literal header field without indexing — new name" (RFC 7541 §6.2.2),
/// plain (not Huffman) strings: uses and changes no dynamic table.
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    for s in [name, value] {
        // String literal, H = 0, length as a 7-bit prefix integer (§5.1, §5.2).
        loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out)
            .expect("writing to a Vec cannot fail");
        out.extend_from_slice(s);
    }
}

/// Whether the HTTP/2 server accepts `value` as an `:authority`.
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::Encoder;

    // run(input, chunk): what the server sees of `input` read in chunks.
    use crate::fuzzing::authority_rewrite as run;

    fn headers_frame(enc: &mut Encoder<'_>, stream: u32, authority: &[u8], eos: bool) -> Vec<u8> {
        let block = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/tcpd.v2.AdminService/Status"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
        ]);
        let mut out = Vec::new();
        let flags = END_HEADERS | if eos { END_STREAM } else { 0 };
        write_frame(&mut out, HEADERS, flags, stream, &block);
        out
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    /// Decodes every header block the server would see.
    fn server_view(bytes: &[u8]) -> Vec<(u32, Fields)> {
        let mut dec = Decoder::new();
        let mut i = PREFACE.len();
        let mut blocks = Vec::new();
        let mut cur: Option<(u32, Vec<u8>)> = None;
        while i < bytes.len() {
            let (len, kind, flags, id) = parse_header(&bytes[i..i + 9]);
            let payload = &bytes[i + 9..i + 9 + len];
            if kind == HEADERS || kind == CONTINUATION {
                let frag = if kind == HEADERS {
                    headers_fragment(payload, flags).unwrap()
                } else {
                    payload
                };
                cur.get_or_insert((id, Vec::new()))
                    .1
                    .extend_from_slice(frag);
                if flags & END_HEADERS != 0 {
                    let (id, frag) = cur.take().unwrap();
                    blocks.push((id, dec.decode(&frag).unwrap()));
                }
            }
            i += 9 + len;
        }
        blocks
    }

    fn authority_of(fields: &[(Vec<u8>, Vec<u8>)]) -> &[u8] {
        &fields.iter().find(|(n, _)| n == b":authority").unwrap().1
    }

    fn conversation(authorities: &[&[u8]]) -> Vec<u8> {
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        // SETTINGS frame, empty.
        write_frame(&mut input, 0x4, 0, 0, &[]);
        for (n, a) in authorities.iter().enumerate() {
            let id = 1 + 2 * n as u32;
            input.extend(headers_frame(&mut enc, id, a, false));
            write_frame(&mut input, 0x0, END_STREAM, id, &[0, 0, 0, 0, 2, 8, 1]);
        }
        input
    }

    #[test]
    fn valid_authorities_pass_byte_for_byte() {
        let input = conversation(&[b"localhost", b"localhost", b"x@y:99"]);
        for chunk in [1, 7, 9, 100, 1 << 20] {
            assert_eq!(run(&input, chunk).unwrap(), input, "chunk {chunk}");
        }
    }

    #[test]
    fn a_client_that_starts_valid_is_no_longer_followed() {
        // Its later blocks pass as they are (h2 judges them itself).
        let input = conversation(&[b"localhost", b"%2Fx", b"localhost"]);
        let mut fix = AuthorityFix::new();
        let n = fix.pass_len(&input);
        fix.absorb(&input[n..]).unwrap();
        assert!(fix.decoder.is_none() && !fix.rewriting);
        assert_eq!(run(&input, 7).unwrap(), input);
    }

    #[test]
    fn unparsable_authorities_are_replaced_and_the_rest_kept() {
        let bad: &[u8] = b"%2Frun%2Ftcpd%2Ftcpd.sock";
        let input = conversation(&[bad, bad, b"localhost", b"/run/tcpd/tcpd.sock", b"ok"]);
        for chunk in [1, 5, 9, 64, 1 << 20] {
            let seen = run(&input, chunk).unwrap();
            let blocks = server_view(&seen);
            let got: Vec<&[u8]> = blocks.iter().map(|(_, f)| authority_of(f)).collect();
            assert_eq!(
                got,
                [
                    b"localhost" as &[u8],
                    REPLACEMENT,
                    REPLACEMENT,
                    REPLACEMENT,
                    b"ok"
                ]
            );
            for (n, (id, fields)) in blocks.iter().enumerate() {
                assert_eq!(*id, 1 + 2 * n as u32);
                assert_eq!(fields.len(), 5);
                assert_eq!(fields[2].1, b"/tcpd.v2.AdminService/Status");
            }
            // DATA frames are kept.
            assert_eq!(
                seen.windows(7)
                    .filter(|w| w == &[0, 0, 0, 0, 2, 8, 1])
                    .count(),
                5
            );
        }
    }

    #[test]
    fn padded_prioritized_and_continued_blocks() {
        let mut enc = Encoder::new();
        let block = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":authority", b"/a/b"),
            (b":path", b"/x"),
        ]);
        let (a, b) = block.split_at(4);
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        write_frame(
            &mut input,
            HEADERS,
            PADDED | PRIORITY | END_STREAM,
            1,
            &payload,
        );
        write_frame(&mut input, CONTINUATION, END_HEADERS, 1, b);
        let seen = run(&input, 3).unwrap();
        let blocks = server_view(&seen);
        assert_eq!(authority_of(&blocks[0].1), REPLACEMENT);
        // END_STREAM kept on the rewritten HEADERS frame.
        assert_eq!(seen[PREFACE.len() + 4] & END_STREAM, END_STREAM);
    }

    #[test]
    fn large_blocks_are_split_into_continuations() {
        let mut enc = Encoder::new();
        let big = vec![b'v'; 40_000];
        let block = enc.encode([(&b":authority"[..], &b"%%"[..]), (b"x-big", &big[..])]);
        let mut input = PREFACE.to_vec();
        write_frame(&mut input, HEADERS, END_HEADERS, 1, &block);
        let seen = run(&input, 4096).unwrap();
        let blocks = server_view(&seen);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].1[1].1.len(), 40_000);
    }

    #[test]
    fn oversized_and_garbage_input_fail_or_pass_without_panic() {
        let mut input = PREFACE.to_vec();
        input.extend_from_slice(&[0xff, 0xff, 0xff, HEADERS, 0, 0, 0, 0, 1]);
        assert!(matches!(run(&input, 100), Err(FixError::BlockTooLarge)));
        // Undecodable HPACK before any rewrite: passed on as it is.
        let mut input = PREFACE.to_vec();
        write_frame(
            &mut input,
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff],
        );
        write_frame(&mut input, 0x0, 0, 1, b"abc");
        assert_eq!(run(&input, 5).unwrap(), input);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &(proptest::collection::vec(any::<u8>(), 0..2048), 1usize..64),
                |(tail, chunk)| {
                    let mut input = conversation(&[b"%2Fa"]);
                    input.extend_from_slice(&tail);
                    let _ = run(&input, chunk);
                    Ok(())
                },
            )
            .unwrap();
    }
}
