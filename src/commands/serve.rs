//! `clusterup serve`: the control API over the same operations.

use anyhow::Result;

use crate::cli::{GlobalArgs, ServeArgs};
use crate::exit::ExitStatus;
use crate::output::Printer;
use crate::settings::StackSettings;

pub fn run(stacks: &[StackSettings], global: &GlobalArgs, args: &ServeArgs, printer: &Printer) -> Result<ExitStatus> {
    // Each operation is this command line's: the same configuration and
    // state dir, whatever the working directory of the server.
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut child = Vec::new();
    child.extend(global.config.as_deref().map(|c| format!("--config={}", absolute(c).display())));
    child.extend(global.state_dir.as_deref().map(|d| format!("--state-dir={}", absolute(d).display())));
    child.extend(global.metrics_file.as_deref().map(|m| format!("--metrics-file={}", absolute(m).display())));
    let options = crate::serve::Options {
        listen: args.listen,
        credentials: args.credentials.clone(),
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        insecure_http: args.insecure_http,
        every: args.every,
        jitter: args.jitter,
        global: child,
    };
    crate::serve::run(stacks, options, printer)
}
