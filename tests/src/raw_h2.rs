//! A hand-written HTTP/2 client that sends whatever frames a test asks
//! for, including the ones a well-behaved library never would (more
//! streams than the server allows, DATA on a stream already ended), to
//! check that the server's limits hold against hostile peers.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// A frame type, as numbered by RFC 9113.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// DATA.
    Data = 0x0,
    /// HEADERS.
    Headers = 0x1,
    /// RST_STREAM.
    RstStream = 0x3,
    /// SETTINGS.
    Settings = 0x4,
    /// GOAWAY.
    GoAway = 0x7,
}

/// `PROTOCOL_ERROR`, `REFUSED_STREAM`, `CANCEL`, `ENHANCE_YOUR_CALM`.
pub mod reason {
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// The stream was refused before any work was done on it.
    pub const REFUSED_STREAM: u32 = 0x7;
    /// The stream is no longer wanted.
    pub const CANCEL: u32 = 0x8;
    /// The peer is behaving in a way that may generate excessive load.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// What the server sent that the tests look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFrame {
    /// RST_STREAM on a stream, with its error code.
    Reset { stream_id: u32, code: u32 },
    /// GOAWAY, with its error code.
    GoAway { code: u32 },
    /// Any other frame.
    Other,
}

/// A raw HTTP/2 connection: frames go out as written, what comes back is
/// read by a task and handed over as [`ServerFrame`]s.
pub struct RawH2 {
    writer: OwnedWriteHalf,
    /// Frames from the server; ends when the server closes.
    pub frames: mpsc::UnboundedReceiver<ServerFrame>,
    authority: String,
}

impl RawH2 {
    /// Opens a connection with prior knowledge and settles the settings.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (mut reader, mut writer) = stream.into_split();
        writer
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        writer
            .write_all(&frame(FrameType::Settings, 0, 0, &[]))
            .await
            .expect("settings");
        // The server's SETTINGS first: acknowledge it, as the protocol wants.
        loop {
            let (kind, flags, _, _) = read_frame(&mut reader).await.expect("server settings");
            if kind == FrameType::Settings as u8 && flags & 0x1 == 0 {
                break;
            }
        }
        writer
            .write_all(&frame(FrameType::Settings, 0x1, 0, &[]))
            .await
            .expect("settings ack");
        let (sender, frames) = mpsc::unbounded_channel();
        tokio::spawn(read_frames(reader, sender));
        Self {
            writer,
            frames,
            authority: addr.to_string(),
        }
    }

    /// Sends the head of a gRPC call to `path` on `stream_id` (odd,
    /// increasing), ending the stream there when `end_stream`.
    pub async fn headers(&mut self, stream_id: u32, path: &str, end_stream: bool) {
        let block = grpc_head(path, &self.authority);
        // END_HEADERS, and END_STREAM when asked.
        let flags = 0x4 | if end_stream { 0x1 } else { 0 };
        self.send(frame(FrameType::Headers, flags, stream_id, &block))
            .await;
    }

    /// Sends DATA on `stream_id`.
    pub async fn data(&mut self, stream_id: u32, payload: &[u8]) {
        self.send(frame(FrameType::Data, 0, stream_id, payload))
            .await;
    }

    /// Sends RST_STREAM on `stream_id`.
    pub async fn reset(&mut self, stream_id: u32, code: u32) {
        self.send(frame(
            FrameType::RstStream,
            0,
            stream_id,
            &code.to_be_bytes(),
        ))
        .await;
    }

    /// Writes bytes; a connection the server closed is not an error here,
    /// the frames it sent say why.
    async fn send(&mut self, bytes: Vec<u8>) {
        let _ = self.writer.write_all(&bytes).await;
    }
}

/// One frame: the 9-byte header and the payload.
fn frame(kind: FrameType, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("a small frame");
    let mut bytes = Vec::with_capacity(9 + payload.len());
    bytes.extend_from_slice(&length.to_be_bytes()[1..]);
    bytes.push(kind as u8);
    bytes.push(flags);
    bytes.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The HPACK block of a gRPC request head, with no dynamic table: indexed
/// `:method POST` and `:scheme http`, then literals without indexing.
fn grpc_head(path: &str, authority: &str) -> Vec<u8> {
    let mut block = vec![0x83, 0x86];
    let mut literal = |name_index: &[u8], name: Option<&str>, value: &str| {
        block.extend_from_slice(name_index);
        if let Some(name) = name {
            block.push(u8::try_from(name.len()).expect("a short name"));
            block.extend_from_slice(name.as_bytes());
        }
        block.push(u8::try_from(value.len()).expect("a short value"));
        block.extend_from_slice(value.as_bytes());
    };
    literal(&[0x04], None, path); // :path
    literal(&[0x01], None, authority); // :authority
    literal(&[0x0f, 0x10], None, "application/grpc"); // content-type (31)
    literal(&[0x00], Some("te"), "trailers");
    block
}

/// Reads one frame: its type, flags, stream and payload.
async fn read_frame(reader: &mut OwnedReadHalf) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut header = [0u8; 9];
    reader.read_exact(&mut header).await?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let stream_id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    Ok((header[3], header[4], stream_id, payload))
}

async fn read_frames(mut reader: OwnedReadHalf, frames: mpsc::UnboundedSender<ServerFrame>) {
    while let Ok((kind, _, stream_id, payload)) = read_frame(&mut reader).await {
        let code_at = |offset: usize| {
            payload.get(offset..offset + 4).map_or(0, |bytes| {
                u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
            })
        };
        let event = if kind == FrameType::RstStream as u8 {
            ServerFrame::Reset {
                stream_id,
                code: code_at(0),
            }
        } else if kind == FrameType::GoAway as u8 {
            ServerFrame::GoAway { code: code_at(4) }
        } else {
            ServerFrame::Other
        };
        if frames.send(event).is_err() {
            return;
        }
    }
}
