//! `sb-compat-adapter LIBRARY`: one Rust client library driven by the compatibility suite
//! (compat-tests/python/adapterkit.py) through the same line protocol as the Node.js adapters
//! of compat-tests/node: a JSON command per line on stdin, a JSON reply per line on stdout.
//!
//! LIBRARY is `rskafka` (Kafka), `rumqttc` (MQTT 3.1.1 and 5) or `lapin` (AMQP 0-9-1). Commands
//! may also be given as further arguments, one JSON object each, for a reproduction by hand:
//!
//! ```text
//! sb-compat-adapter rumqttc '{"op":"connect","url":"mqtt://127.0.0.1:1883"}' '{"op":"end"}'
//! ```

mod amqp;
mod error;
mod kafka;
mod library;
mod mqtt;
mod protocol;
mod waiters;

use std::process::ExitCode;

use library::Library;

const USAGE: &str = "usage: sb-compat-adapter rskafka|rumqttc|lapin [COMMAND-JSON...]";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Some(library) = Library::named(&name) else {
        eprintln!("unknown library {name:?}\n{USAGE}");
        return ExitCode::from(2);
    };
    let given: Vec<String> = args.collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(protocol::serve(library, given));
    // Library tasks (event loops, consumers) may still be parked on sockets: the replies are
    // out, so the process ends here rather than waiting for the runtime to wind them down.
    std::process::exit(0)
}
