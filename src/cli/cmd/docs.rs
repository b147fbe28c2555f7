//! Generated documentation: shell completions and man pages.

use super::super::*;

/// `vault completions`.
pub(in crate::cli) fn completions(shell: clap_complete::Shell) -> Result<Outcome, Error> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "vault", &mut buf);
    match std::io::stdout().write_all(&buf) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Internal(format!(
            "cannot write the completion script: {e}"
        ))),
        _ => Ok(Outcome::Done),
    }
}

/// `vault man`.
pub(in crate::cli) fn man(out: &Out, dir: &PathBuf) -> Result<Outcome, Error> {
    let cmd = <Cli as clap::CommandFactory>::command();
    std::fs::create_dir_all(dir).map_err(|e| vault::error::repo_io(dir, e))?;
    let mut pages = vec![(String::from("vault"), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let name = format!("vault-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut buf)
            .map_err(|e| vault::error::repo_io(&path, e))?;
        std::fs::write(&path, buf).map_err(|e| vault::error::repo_io(&path, e))?;
    }
    out.note(&format!("man pages written to {}", dir.display()));
    Ok(Outcome::Done)
}
