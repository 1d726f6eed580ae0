//! Messages from the sandbox stages to the caller, fixed 8 bytes each.

use std::os::fd::BorrowedFd;

use crate::error::Stage;

/// One report on the status pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    /// A setup stage failed with this errno; the command was not run.
    SetupFailed { stage: Stage, errno: i32 },
    /// Pid 1 of the step ended with this raw wait status.
    StepExited { wait_status: i32 },
}

pub(crate) const SIZE: usize = 8;

impl Message {
    pub(crate) fn encode(self) -> [u8; SIZE] {
        let (tag, stage, value) = match self {
            Message::SetupFailed { stage, errno } => (1u8, stage as u8, errno),
            Message::StepExited { wait_status } => (2u8, 0, wait_status),
        };
        let v = value.to_le_bytes();
        [tag, stage, 0, 0, v[0], v[1], v[2], v[3]]
    }

    pub(crate) fn decode(b: &[u8; SIZE]) -> Option<Message> {
        let value = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        match b[0] {
            1 => Some(Message::SetupFailed {
                stage: Stage::from_u8(b[1])?,
                errno: value,
            }),
            2 => Some(Message::StepExited { wait_status: value }),
            _ => None,
        }
    }

    /// Writes the message; best effort (the reader may be gone). No allocation.
    pub(crate) fn send(self, fd: BorrowedFd<'_>) {
        let buf = self.encode();
        let mut off = 0;
        while off < SIZE {
            match rustix::io::write(fd, &buf[off..]) {
                Ok(0) => return,
                Ok(n) => off += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return,
            }
        }
    }
}

/// Splits what was read from the pipe into messages.
pub(crate) fn decode_all(bytes: &[u8]) -> Vec<Message> {
    bytes
        .chunks_exact(SIZE)
        .filter_map(|c| c.try_into().ok().and_then(Message::decode))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            Message::SetupFailed {
                stage: Stage::Chroot,
                errno: 13,
            },
            Message::StepExited {
                wait_status: 0x0300,
            },
        ] {
            assert_eq!(Message::decode(&m.encode()), Some(m));
        }
    }
}
