//! The protobuf codec of the grant service: prost's, except that a request that does
//! not decode (a truncated message, a string field with invalid UTF-8) is the caller's
//! fault and answers INVALID_ARGUMENT, where tonic-prost would answer INTERNAL.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

/// prost encoding; decode failures are INVALID_ARGUMENT.
#[derive(Debug, Clone, Default)]
pub struct GrantCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Codec for GrantCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = InvalidArgumentOnDecodeError<<ProstCodec<T, U> as Codec>::Decoder>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        InvalidArgumentOnDecodeError(ProstCodec::<T, U>::default().decoder())
    }
}

/// Wraps a decoder so that its failures are reported as INVALID_ARGUMENT.
#[derive(Debug)]
pub struct InvalidArgumentOnDecodeError<D>(D);

impl<D: Decoder<Error = Status>> Decoder for InvalidArgumentOnDecodeError<D> {
    type Item = D::Item;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        self.0.decode(src).map_err(|status| {
            // prost's words for a string field holding bytes that are not UTF-8.
            let hint = if status.message().contains("not UTF-8") {
                " (string fields must be UTF-8)"
            } else {
                ""
            };
            Status::new(
                Code::InvalidArgument,
                format!(
                    "the request is not a valid protobuf message of this API{hint}: {}",
                    status.message()
                ),
            )
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
