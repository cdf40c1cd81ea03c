//! The HTTP/1.1 hot path's message handling: parse and validate heads, find the end of chunked
//! bodies, write the forwarded heads. Pure functions over byte buffers; the connection loops
//! that drive them come with the proxy runtime.

pub mod chunked;
pub mod forward;
pub mod head;

pub use chunked::{ChunkError, ChunkedScanner};
pub use forward::{ClientInfo, write_request_head, write_response_head};
pub use head::{
    Framing, HeadError, Limits, RequestHead, ResponseHead, parse_request, parse_response,
};
