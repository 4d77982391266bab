//! `hello-http`: the smallest wkube HTTP pod.
//!
//! Exports `wasi:http/incoming-handler@0.2.12` and answers every request with
//! `200` and `Hello from wkube!\n`, or `$GREETING\n` when the environment
//! variable `GREETING` is set.

use std::io::Write as _;

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello from wkube!".into());
        let body = format!("{greeting}\n");

        let headers = Fields::from_list(&[
            ("content-type".into(), b"text/plain; charset=utf-8".to_vec()),
            ("content-length".into(), body.len().to_string().into_bytes()),
        ])
        .unwrap_or_else(|_| Fields::new());
        let response = OutgoingResponse::new(headers);
        // 200 is the default status of a new outgoing-response.
        let Ok(outgoing) = response.body() else {
            return;
        };
        ResponseOutparam::set(response_out, Ok(response));

        if let Ok(mut stream) = outgoing.write() {
            // A client that went away is not our error: nothing to report to.
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

wasip2::http::proxy::export!(Hello);
