use serde::{Deserialize, Serialize};

/// Which template to send: by id, by name, or both (Sent prefers the id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    id: Option<String>,
    name: Option<String>,
}

pub const TEMPLATE_FIELD_MAX: usize = 100;

impl TemplateRef {
    /// At least one of the two, each 1..=100 characters.
    pub fn new(id: Option<String>, name: Option<String>) -> Result<TemplateRef, &'static str> {
        let ok = |v: &Option<String>| {
            v.as_ref()
                .is_none_or(|s| (1..=TEMPLATE_FIELD_MAX).contains(&s.chars().count()))
        };
        if id.is_none() && name.is_none() {
            return Err("template_id or template_name is required");
        }
        if !ok(&id) || !ok(&name) {
            return Err("Length must be between 1 and 100.");
        }
        Ok(TemplateRef { id, name })
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}
