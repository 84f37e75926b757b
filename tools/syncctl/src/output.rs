//! Writing what syncctl prints. A reader may go away before the end (`syncctl dlq list | head
//! -1`): `print!` would then panic on the closed pipe, so every line goes through here, where
//! a closed stdout drops the rest of the output quietly and the command still ends with its own
//! exit code. Any other write failure (a full disk) is a failure to report.

use std::io::{ErrorKind, Write};

use crate::client::{Failure, exit};

/// Writes `text` to stdout; nothing when stdout has been closed.
pub(crate) fn stdout(text: &str) -> Result<(), Failure> {
    write_to(&mut std::io::stdout().lock(), text)
}

/// Writes `text` to stderr. Nothing is left to tell when stderr itself fails, so that is
/// ignored.
pub(crate) fn stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

fn write_to(out: &mut impl Write, text: &str) -> Result<(), Failure> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::BrokenPipe => Ok(()),
        Err(err) => Err(Failure::new(
            exit::FAILED,
            format!("cannot write the output to stdout: {err}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stdout whose reader has gone, or that fails otherwise.
    struct Failing(ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stdout_ends_the_output_quietly() {
        assert!(write_to(&mut Failing(ErrorKind::BrokenPipe), "row\n").is_ok());
    }

    #[test]
    fn any_other_write_failure_is_reported() {
        let failure = write_to(&mut Failing(ErrorKind::StorageFull), "row\n").unwrap_err();
        assert_eq!(failure.code, exit::FAILED);
        assert!(failure.message.contains("stdout"), "{}", failure.message);
    }
}
