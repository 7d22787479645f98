//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`), answering every file
//! request with the file and the whole closure of its imports.
//!
//! tonic-reflection answers `file_containing_symbol` with the one file that declares
//! the symbol; a client that does not then ask for each import by name (several
//! strict ones do not, trusting the protocol's "with transitive dependencies")
//! cannot build `storagegrants.v1` without its own copy of
//! `google/protobuf/duration.proto` and `timestamp.proto`. This service sends the
//! closure, as the Go and C++ servers do, and reports an unknown name as an error
//! message on the stream (which stays open) rather than by ending it. The messages
//! are tonic-reflection's; the servers are generated with the grant service's codec
//! (`standard`).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use prost::Message as _;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{
    ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse, ListServiceResponse,
    ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
};
use tonic_reflection::pb::v1alpha;

use super::standard::{reflection_v1, reflection_v1alpha};

/// Why the descriptors could not be indexed at start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An embedded descriptor set does not decode.
    #[error("an embedded file descriptor set does not decode: {0}")]
    Decode(#[source] prost::DecodeError),
    /// A file imports one that no set holds.
    #[error("{file} imports {import}, which no registered descriptor set holds")]
    MissingImport {
        /// The importing file.
        file: String,
        /// The missing one.
        import: String,
    },
}

/// Every file of the served descriptor sets, by name, and which file declares each
/// fully-qualified symbol.
#[derive(Debug, Default)]
struct Index {
    files: BTreeMap<String, (Vec<u8>, Vec<String>)>,
    symbols: BTreeMap<String, String>,
    /// Message names, for the extension-number query.
    messages: HashSet<String>,
    services: Vec<String>,
}

impl Index {
    fn new(sets: &[&[u8]]) -> Result<Self, Error> {
        let mut index = Index::default();
        for set in sets {
            let set = FileDescriptorSet::decode(*set).map_err(Error::Decode)?;
            for file in set.file {
                index.add(file);
            }
        }
        for (name, (_, imports)) in &index.files {
            if let Some(import) = imports.iter().find(|i| !index.files.contains_key(*i)) {
                return Err(Error::MissingImport {
                    file: name.clone(),
                    import: import.clone(),
                });
            }
        }
        index.services.sort();
        index.services.dedup();
        Ok(index)
    }

    fn add(&mut self, file: FileDescriptorProto) {
        let name = file.name().to_owned();
        let package = file.package().to_owned();
        for message in &file.message_type {
            self.add_message(&name, &package, message);
        }
        for e in &file.enum_type {
            self.add_enum(&name, &package, e);
        }
        for service in &file.service {
            let service_name = qualify(&package, service.name());
            for method in &service.method {
                self.symbols
                    .insert(qualify(&service_name, method.name()), name.clone());
            }
            self.symbols.insert(service_name.clone(), name.clone());
            self.services.push(service_name);
        }
        let imports = file.dependency.clone();
        self.files.insert(name, (file.encode_to_vec(), imports));
    }

    fn add_message(&mut self, file: &str, prefix: &str, message: &DescriptorProto) {
        let full = qualify(prefix, message.name());
        for nested in &message.nested_type {
            self.add_message(file, &full, nested);
        }
        for e in &message.enum_type {
            self.add_enum(file, &full, e);
        }
        for field in &message.field {
            self.symbols
                .insert(format!("{full}.{}", field.name()), file.to_owned());
        }
        self.messages.insert(full.clone());
        self.symbols.insert(full, file.to_owned());
    }

    fn add_enum(&mut self, file: &str, prefix: &str, e: &EnumDescriptorProto) {
        let full = qualify(prefix, e.name());
        for value in &e.value {
            // Enum values are scoped like siblings of their enum (protobuf's C++ rule).
            self.symbols
                .insert(qualify(prefix, value.name()), file.to_owned());
        }
        self.symbols.insert(full, file.to_owned());
    }

    /// `name` and every file it imports, directly or not, each once, `name` first.
    fn closure(&self, name: &str) -> Option<Vec<Vec<u8>>> {
        let mut queue = VecDeque::from([name.to_owned()]);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        while let Some(next) = queue.pop_front() {
            if !seen.insert(next.clone()) {
                continue;
            }
            let (bytes, imports) = self.files.get(&next)?;
            out.push(bytes.clone());
            queue.extend(imports.iter().cloned());
        }
        Some(out)
    }

    fn answer(&self, request: ServerReflectionRequest) -> ServerReflectionResponse {
        let files = |name: Option<&String>, what: &str, asked: &str| match name
            .and_then(|n| self.closure(n))
        {
            Some(files) => MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                file_descriptor_proto: files,
            }),
            None => not_found(format!(
                "{what} '{}' not found",
                crate::core::text::echo(asked)
            )),
        };
        let message = match &request.message_request {
            Some(MessageRequest::FileByFilename(name)) => {
                files(self.files.get_key_value(name).map(|(k, _)| k), "file", name)
            }
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                files(self.symbols.get(symbol), "symbol", symbol)
            }
            // The API declares no extension.
            Some(MessageRequest::FileContainingExtension(e)) => not_found(format!(
                "no extension {} of '{}'",
                e.extension_number,
                crate::core::text::echo(&e.containing_type)
            )),
            Some(MessageRequest::AllExtensionNumbersOfType(t)) if self.messages.contains(t) => {
                MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                    base_type_name: t.clone(),
                    extension_number: Vec::new(),
                })
            }
            Some(MessageRequest::AllExtensionNumbersOfType(t)) => {
                not_found(format!("type '{}' not found", crate::core::text::echo(t)))
            }
            Some(MessageRequest::ListServices(_)) => {
                MessageResponse::ListServicesResponse(ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|name| ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
            None => MessageResponse::ErrorResponse(ErrorResponse {
                error_code: tonic::Code::InvalidArgument as i32,
                error_message: "the request names no query".into(),
            }),
        };
        ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(message),
        }
    }
}

/// `name` in the scope `prefix` (a package or a message); `""` is the root.
fn qualify(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn not_found(message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(ErrorResponse {
        error_code: tonic::Code::NotFound as i32,
        error_message: message,
    })
}

/// The reflection service over `sets` (encoded `FileDescriptorSet`s whose imports
/// they hold themselves), for both protocol versions.
#[derive(Debug, Clone)]
pub(super) struct Reflection(Arc<Index>);

impl Reflection {
    /// Indexes `sets`.
    ///
    /// # Errors
    /// [`Error`] when a set does not decode or a file's import is in none of them.
    pub(super) fn new(sets: &[&[u8]]) -> Result<Self, Error> {
        Ok(Self(Arc::new(Index::new(sets)?)))
    }

    /// `grpc.reflection.v1.ServerReflection`.
    pub(super) fn v1(&self) -> reflection_v1::ServerReflectionServer<Self> {
        reflection_v1::ServerReflectionServer::new(self.clone())
    }

    /// `grpc.reflection.v1alpha.ServerReflection`.
    pub(super) fn v1alpha(&self) -> reflection_v1alpha::ServerReflectionServer<Self> {
        reflection_v1alpha::ServerReflectionServer::new(self.clone())
    }
}

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl reflection_v1::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        let index = self.0.clone();
        let answers = request
            .into_inner()
            .map(move |asked| asked.map(|asked| index.answer(asked)));
        Ok(Response::new(Box::pin(answers)))
    }
}

/// v1alpha's messages are v1's, field for field, under another package: the same
/// bytes decode as either.
fn convert<A: prost::Message, B: prost::Message + Default>(a: &A) -> Result<B, Status> {
    B::decode(a.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("reflection message conversion: {e}")))
}

#[tonic::async_trait]
impl reflection_v1alpha::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<v1alpha::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1alpha::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        let index = self.0.clone();
        let answers = request.into_inner().map(move |asked| {
            let asked: ServerReflectionRequest = convert(&asked?)?;
            convert(&index.answer(asked))
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Index {
        Index::new(&[
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ])
        .expect("the embedded sets index")
    }

    fn names(files: &[Vec<u8>]) -> Vec<String> {
        files
            .iter()
            .map(|b| {
                FileDescriptorProto::decode(b.as_slice())
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn a_symbol_comes_with_the_files_it_imports() {
        let index = index();
        let file = &index.symbols["storagegrants.v1.GrantService"];
        let mut got = names(&index.closure(file).unwrap());
        assert_eq!(got.remove(0), "storagegrants/v1/grants.proto");
        got.sort();
        assert_eq!(
            got,
            [
                "google/protobuf/duration.proto",
                "google/protobuf/timestamp.proto"
            ]
        );
    }

    #[test]
    fn unknown_names_are_error_messages() {
        let answer = index().answer(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("no.Such".into())),
        });
        assert!(matches!(
            answer.message_response,
            Some(MessageResponse::ErrorResponse(ErrorResponse {
                error_code: 5,
                ..
            }))
        ));
    }
}
