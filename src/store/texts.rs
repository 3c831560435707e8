//! The strings of one pending request in the memory store, in one allocation.

/// The request's own strings in one allocation: the subject, then the optional fields
/// (`acr_values`, `binding_message`, `login_hint`, the notification token), field `i` starting
/// at `starts[i]` and running to the next one's start (the last to the end).
#[derive(Debug)]
pub(super) struct Texts {
    buf: Box<str>,
    starts: [u32; 4],
    /// Bit `i` set: optional field `i` is present (an absent one is empty).
    present: u8,
}

impl Texts {
    /// `None` past 4 GiB (far beyond any request body the gateway reads).
    pub(super) fn new(subject: &str, optional: [Option<&str>; 4]) -> Option<Self> {
        let len = subject.len() + optional.iter().flatten().map(|t| t.len()).sum::<usize>();
        let mut buf = String::with_capacity(len);
        buf.push_str(subject);
        let (mut starts, mut present) = ([0u32; 4], 0u8);
        for (i, field) in optional.into_iter().enumerate() {
            starts[i] = u32::try_from(buf.len()).ok()?;
            if let Some(t) = field {
                buf.push_str(t);
                present |= 1 << i;
            }
        }
        Some(Self {
            buf: buf.into_boxed_str(),
            starts,
            present,
        })
    }

    pub(super) fn subject(&self) -> &str {
        &self.buf[..self.starts[0] as usize]
    }

    /// Optional field `i`.
    pub(super) fn optional(&self, i: usize) -> Option<&str> {
        (self.present & (1 << i) != 0).then(|| {
            let end = self
                .starts
                .get(i + 1)
                .map_or(self.buf.len(), |e| *e as usize);
            &self.buf[self.starts[i] as usize..end]
        })
    }
}
