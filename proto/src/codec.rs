//! The gRPC codec of the tcpd.v2 services: prost's, with buffers that cost
//! nothing until a message needs them.
//!
//! tonic allocates an encode and a decode buffer for every RPC up front
//! (8 KiB each by default, `tonic::codec::BufferSettings`). With one
//! `Stream` RPC per connected socket that is 16 KiB per idle connection in
//! the daemon (and in the client), most of it never used: an idle
//! connection sends one `opened` frame and receives one `open` frame.
//! [`LeanCodec`] starts both buffers empty; they grow to the message at
//! hand (tonic reserves each message's full length at once, so a 64 KiB
//! frame is still one allocation), and what an idle stream keeps is the
//! tail of its last message's allocation, not a fixed 8 KiB.

use prost::Message;
use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial capacity of the per-RPC encode and decode buffers.
pub const INITIAL_BUFFER: usize = 0;

/// How many encoded bytes of a server stream tonic batches into one HTTP/2
/// DATA write before yielding (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

/// The per-RPC buffer settings of [`LeanCodec`].
pub fn buffer_settings() -> BufferSettings {
    BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD)
}

/// prost encoding (`application/grpc+proto`) with [`buffer_settings`]; the
/// generated services and clients of [`crate::v2`] use it.
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(buffer_settings())
    }
}
