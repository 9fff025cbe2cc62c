//! `autodebit call`: JSON to and from any RPC of a running platform, with nothing else
//! installed. The methods and their messages come from the server's reflection service; the
//! request is encoded from JSON and the answer printed as canonical protobuf JSON.
use anyhow::{Context, bail};
use prost_reflect::prost::Message;
use prost_reflect::prost_types::FileDescriptorProto;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions};
use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

#[derive(clap::Args, Debug)]
pub struct CallArgs {
    /// `package.Service/Method`, `Service/Method`, or just `Method` when only one service has it.
    method: String,
    /// The request as JSON (`-` reads it from stdin); `{}` when left out.
    json: Option<String>,
    /// A merchant's API key or the operator key, sent as `authorization: Bearer KEY`.
    #[arg(long, env = "AUTODEBIT_KEY", hide_env_values = true)]
    key: Option<String>,
    /// The platform's gRPC address (`https://HOST:PORT` for a listener serving TLS).
    #[arg(long, env = "AUTODEBIT_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// Trust this CA (PEM file) for the server's certificate; implies TLS.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Present this client certificate (PEM file), for a listener that requires one (mutual
    /// TLS); needs `--client-key`.
    #[arg(long, requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    /// The private key (PEM file) of `--client-cert`.
    #[arg(long, requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
}

impl CallArgs {
    /// A call of `method` with the request `json`.
    pub fn new(method: &str, json: String, key: Option<String>, addr: String) -> Self {
        CallArgs {
            method: method.to_string(),
            json: Some(json),
            key,
            addr,
            ca: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// Makes the call; an error, the server's or ours, goes to stderr and the exit status is 1.
pub async fn run(args: CallArgs) -> anyhow::Result<()> {
    if let Err(e) = call(args).await {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn call(args: CallArgs) -> anyhow::Result<()> {
    let tls = args.ca.is_some() || args.client_cert.is_some();
    let uri = match args.addr.split_once("://") {
        Some(_) => args.addr.clone(),
        None if tls => format!("https://{}", args.addr),
        None => format!("http://{}", args.addr),
    };
    let mut endpoint = Channel::from_shared(uri.clone())
        .with_context(|| format!("--addr: {:?} is not an address", args.addr))?
        .connect_timeout(Duration::from_secs(10));
    if tls || uri.starts_with("https://") {
        let read = crate::platform::read_flag_file;
        let mut config = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &args.ca {
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(read("--ca", ca)?));
        }
        if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
            let identity =
                tonic::transport::Identity::from_pem(read("--client-cert", cert)?, read("--client-key", key)?);
            config = config.identity(identity);
        }
        endpoint = endpoint.tls_config(config).context("the TLS settings")?;
    }
    let channel = endpoint.connect().await.with_context(|| format!("cannot reach {uri}"))?;
    let key = args.key.as_deref();
    let pool = reflect(channel.clone(), key).await?;
    let method = resolve(&pool, &args.method)?;
    if method.is_client_streaming() || method.is_server_streaming() {
        bail!("{} streams; `autodebit call` makes unary calls only", method.full_name());
    }
    let text = match args.json.as_deref() {
        None => "{}".to_string(),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading the request from stdin")?;
            s
        }
        Some(json) => json.to_string(),
    };
    let request = keyed(parse(method.input(), &text)?, key)?;
    let path = PathAndQuery::try_from(format!("/{}/{}", method.parent_service().full_name(), method.name()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.with_context(|| format!("cannot reach {uri}"))?;
    match grpc.unary(request, path, DynamicCodec(method.output())).await {
        Ok(answer) => {
            println!("{}", pretty(answer.get_ref())?);
            Ok(())
        }
        Err(status) => bail!("{}: {}", code_name(status.code()), status.message()),
    }
}

/// `message`, with `key` as its bearer credential when there is one.
fn keyed<T>(message: T, key: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    match key {
        Some(key) => crate::demo::authed(message, key).context("--key: not a valid header value"),
        None => Ok(tonic::Request::new(message)),
    }
}

/// Every service the server lists, with the files that define it and their imports (asked
/// with the key too, should the server want one for reflection).
async fn reflect(channel: Channel, key: Option<&str>) -> anyhow::Result<DescriptorPool> {
    let mut client = ServerReflectionClient::new(channel);
    let services = match ask(&mut client, key, MessageRequest::ListServices(String::new())).await? {
        MessageResponse::ListServicesResponse(list) => list.service.into_iter().map(|s| s.name).collect::<Vec<_>>(),
        other => bail!("server reflection answered a service listing with {other:?}"),
    };
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    let mut wanted: Vec<MessageRequest> = services.into_iter().map(MessageRequest::FileContainingSymbol).collect();
    while let Some(request) = wanted.pop() {
        let MessageResponse::FileDescriptorResponse(found) = ask(&mut client, key, request.clone()).await? else {
            // A listed service the server has no descriptor for cannot be called by name anyway.
            if matches!(request, MessageRequest::FileContainingSymbol(_)) {
                continue;
            }
            bail!("server reflection has no descriptor for {request:?}");
        };
        for bytes in found.file_descriptor_proto {
            let file = FileDescriptorProto::decode(bytes.as_slice()).context("a file descriptor from reflection")?;
            if seen.insert(file.name().to_string()) {
                wanted.extend(
                    file.dependency.iter().filter(|d| !seen.contains(*d)).cloned().map(MessageRequest::FileByFilename),
                );
                files.push(file);
            }
        }
    }
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files).context("the server's descriptors")?;
    Ok(pool)
}

/// One question to the reflection service (v1).
async fn ask(
    client: &mut ServerReflectionClient<Channel>,
    key: Option<&str>,
    request: MessageRequest,
) -> anyhow::Result<MessageResponse> {
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let mut answers = client
        .server_reflection_info(keyed(futures::stream::iter([request]), key)?)
        .await
        .context("server reflection (grpc.reflection.v1) is not available")?
        .into_inner();
    answers.message().await?.and_then(|a| a.message_response).context("server reflection gave no answer")
}

/// The method `wanted` names: `package.Service/Method`, `Service/Method` or `Method`.
fn resolve(pool: &DescriptorPool, wanted: &str) -> anyhow::Result<MethodDescriptor> {
    let trimmed = wanted.trim_start_matches('/');
    let (service, name) = match trimmed.rsplit_once('/') {
        Some((service, name)) => (Some(service), name),
        None => (None, trimmed),
    };
    let found: Vec<MethodDescriptor> = pool
        .services()
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .filter(|m| m.name() == name)
        .filter(|m| service.is_none_or(|s| m.parent_service().full_name() == s || m.parent_service().name() == s))
        .collect();
    let full = |m: &MethodDescriptor| format!("{}/{}", m.parent_service().full_name(), m.name());
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => {
            let services: Vec<String> = pool.services().map(|s| s.full_name().to_string()).collect();
            bail!("METHOD: the server has no method {wanted:?} (its services: {})", services.join(", "))
        }
        many => {
            let names: Vec<String> = many.iter().map(full).collect();
            bail!("METHOD: {wanted:?} is ambiguous: {}", names.join(", "))
        }
    }
}

/// `text` as a `desc` message in protobuf's JSON mapping; an error names the field at fault.
fn parse(desc: MessageDescriptor, text: &str) -> anyhow::Result<DynamicMessage> {
    let value: serde_json::Value = serde_json::from_str(text).context("JSON: not valid JSON")?;
    DynamicMessage::deserialize(desc.clone(), &value).with_context(|| match culprit(&desc, &value) {
        Some(field) => format!("JSON: {field}: not valid in a {}", desc.full_name()),
        None => format!("JSON: not a valid {}", desc.full_name()),
    })
}

/// The path (`terms.amount.minor_units`, `documents[1].kind`) of the first field of `value`
/// that `desc` does not take.
fn culprit(desc: &MessageDescriptor, value: &serde_json::Value) -> Option<String> {
    let serde_json::Value::Object(fields) = value else { return None };
    for (name, v) in fields {
        let alone = serde_json::Value::Object([(name.clone(), v.clone())].into_iter().collect());
        if DynamicMessage::deserialize(desc.clone(), &alone).is_ok() {
            continue;
        }
        let field = desc.get_field_by_name(name).or_else(|| desc.get_field_by_json_name(name));
        let inner = field.and_then(|f| f.kind().as_message().cloned()).and_then(|m| match v {
            serde_json::Value::Array(items) => {
                items.iter().enumerate().find_map(|(i, item)| Some(format!("[{i}].{}", culprit(&m, item)?)))
            }
            _ => Some(format!(".{}", culprit(&m, v)?)),
        });
        return Some(format!("{name}{}", inner.unwrap_or_default()));
    }
    None
}

/// Canonical protobuf JSON, indented.
fn pretty(message: &DynamicMessage) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let mut json = serde_json::Serializer::pretty(&mut out);
    message.serialize_with_options(&mut json, &SerializeOptions::new())?;
    Ok(String::from_utf8(out)?)
}

/// A status code as gRPC names it: `NOT_FOUND`, `UNAUTHENTICATED`, ….
fn code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// Encodes any message and decodes the answer as the method's output type.
#[derive(Clone)]
struct DynamicCodec(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicCodec;
    type Decoder = DynamicCodec;

    fn encoder(&mut self) -> Self::Encoder {
        self.clone()
    }

    fn decoder(&mut self) -> Self::Decoder {
        self.clone()
    }
}

impl Encoder for DynamicCodec {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf).map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

impl Decoder for DynamicCodec {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), buf)
            .map(Some)
            .map_err(|e| Status::internal(format!("the answer is not a {}: {e}", self.0.full_name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The platform's protos and both versions of the reflection service (two services named
    /// `ServerReflection`, each with a `ServerReflectionInfo`).
    fn pool() -> DescriptorPool {
        let mut pool = DescriptorPool::decode(autodebit_proto::FILE_DESCRIPTOR_SET).unwrap();
        for set in [tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET, tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET] {
            pool.decode_file_descriptor_set(set).unwrap();
        }
        pool
    }

    #[test]
    fn methods_resolve_by_full_short_and_bare_names() {
        let pool = pool();
        for name in [
            "autodebit.contracts.v1.ContractsService/GetContract",
            "/autodebit.contracts.v1.ContractsService/GetContract",
            "ContractsService/GetContract",
            "GetContract",
        ] {
            let m = resolve(&pool, name).unwrap();
            assert_eq!(m.full_name(), "autodebit.contracts.v1.ContractsService.GetContract", "{name}");
        }
        let err = resolve(&pool, "NoSuchMethod").unwrap_err().to_string();
        assert!(err.contains("no method") && err.contains("autodebit.contracts.v1.ContractsService"), "{err}");
        let err = resolve(&pool, "PlansService/GetContract").unwrap_err().to_string();
        assert!(err.contains("no method"), "{err}");
    }

    #[test]
    fn a_name_two_services_share_is_ambiguous_and_the_full_name_is_not() {
        let pool = pool();
        for name in ["ServerReflectionInfo", "ServerReflection/ServerReflectionInfo"] {
            let err = resolve(&pool, name).unwrap_err().to_string();
            assert!(err.contains("ambiguous") && err.contains("grpc.reflection.v1alpha.ServerReflection/"), "{err}");
        }
        let m = resolve(&pool, "grpc.reflection.v1.ServerReflection/ServerReflectionInfo").unwrap();
        assert_eq!(m.parent_service().full_name(), "grpc.reflection.v1.ServerReflection");
    }

    #[test]
    fn bad_json_names_the_message_and_the_field() {
        let pool = pool();
        let m = resolve(&pool, "GetContract").unwrap();
        let err = format!("{:#}", parse(m.input(), r#"{"contract_id": 7}"#).unwrap_err());
        assert!(
            err.starts_with("JSON: contract_id: not valid in a autodebit.contracts.v1.GetContractRequest"),
            "{err}"
        );
        let err = format!("{:#}", parse(m.input(), r#"{"contract_idx": "ct_1"}"#).unwrap_err());
        assert!(err.contains("contract_idx"), "{err}");
        let err = format!("{:#}", parse(m.input(), r#"{"contract_id": "#).unwrap_err());
        assert!(err.starts_with("JSON: not valid JSON"), "{err}");
        let plan = resolve(&pool, "CreatePlan").unwrap();
        let nested = r#"{"terms": {"service_name": "x", "amount": {"minor_units": "lots"}}}"#;
        let err = format!("{:#}", parse(plan.input(), nested).unwrap_err());
        assert!(err.starts_with("JSON: terms.amount.minor_units: "), "{err}");
        let apply = resolve(&pool, "ApplyMerchant").unwrap();
        let listed = r#"{"documents": [{"kind": "DOCUMENT_KIND_BUSINESS_LICENCE"}, {"kind": "PASSPORT"}]}"#;
        let err = format!("{:#}", parse(apply.input(), listed).unwrap_err());
        assert!(err.starts_with("JSON: documents[1].kind: "), "{err}");
        let ok = parse(m.input(), r#"{"contract_id": "ct_1"}"#).unwrap();
        assert_eq!(pretty(&ok).unwrap(), "{\n  \"contractId\": \"ct_1\"\n}");
    }

    #[test]
    fn codes_print_as_grpc_names_them() {
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
    }
}
