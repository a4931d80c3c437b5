//! Proto comments, as OpenAPI descriptions.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, FileDescriptor};

/// Leading comments by file and source path.
pub(super) struct Comments {
    by_file: HashMap<String, HashMap<Vec<i32>, String>>,
}

impl Comments {
    pub(super) fn new(pool: &DescriptorPool) -> Self {
        let by_file = pool
            .files()
            .map(|file| {
                let comments = file
                    .file_descriptor_proto()
                    .source_code_info
                    .iter()
                    .flat_map(|info| &info.location)
                    .filter_map(|location| {
                        let text = clean_comment(location.leading_comments.as_deref()?);
                        (!text.is_empty()).then(|| (location.path.clone(), text))
                    })
                    .collect();
                (file.name().to_owned(), comments)
            })
            .collect();
        Self { by_file }
    }

    /// The comment above the element at `path` of `file`, or "".
    pub(super) fn of(&self, file: &FileDescriptor, path: &[i32]) -> String {
        self.by_file
            .get(file.name())
            .and_then(|comments| comments.get(path))
            .cloned()
            .unwrap_or_default()
    }
}

/// A proto comment as Markdown: the one space after `//` dropped.
fn clean_comment(raw: &str) -> String {
    raw.lines()
        .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// The first sentence of a comment, for an operation's summary.
pub(super) fn first_sentence(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.find(". ") {
        Some(end) => flat[..=end].to_owned(),
        None => flat,
    }
}
