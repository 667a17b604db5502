//! XEP-0004: Data Forms, `<x xmlns='jabber:x:data' type='...'>`, the subset that query forms
//! (XEP-0313) need: the form type, and fields with a var, a type, a label and values. The
//! `FORM_TYPE` hidden field (XEP-0068) is kept apart in [`DataForm::form_type`]; titles,
//! instructions, options and reported fields are not modelled.

use super::{XepError, expect};
use crate::element::Element;
use crate::ns;

/// What a form is for (the `type` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormType {
    /// A form to fill in.
    Form,
    /// A filled-in form.
    Submit,
    Cancel,
    Result,
}

impl FormType {
    pub fn as_str(self) -> &'static str {
        match self {
            FormType::Form => "form",
            FormType::Submit => "submit",
            FormType::Cancel => "cancel",
            FormType::Result => "result",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "form" => Some(FormType::Form),
            "submit" => Some(FormType::Submit),
            "cancel" => Some(FormType::Cancel),
            "result" => Some(FormType::Result),
            _ => None,
        }
    }
}

/// One `<field/>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Field {
    pub var: String,
    /// `text-single`, `jid-single`, `text-multi`, `hidden`, ... (absent in most submissions).
    pub type_: Option<String>,
    pub label: Option<String>,
    pub values: Vec<String>,
}

impl Field {
    pub fn new(var: &str, type_: Option<&str>) -> Self {
        Field {
            var: var.to_owned(),
            type_: type_.map(str::to_owned),
            label: None,
            values: Vec::new(),
        }
    }

    /// Builder: add a value.
    #[must_use]
    pub fn value(mut self, v: impl Into<String>) -> Self {
        self.values.push(v.into());
        self
    }

    /// The single value of a single-valued field: `None` when there is none, an error when
    /// there are several.
    pub fn single(&self) -> Result<Option<&str>, XepError> {
        match self.values.as_slice() {
            [] => Ok(None),
            [v] => Ok(Some(v.as_str())),
            _ => Err(XepError::BadValue("field")),
        }
    }
}

/// A data form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataForm {
    pub type_: FormType,
    /// The value of the hidden `FORM_TYPE` field, if any.
    pub form_type: Option<String>,
    /// Every other field, in document order.
    pub fields: Vec<Field>,
}

impl DataForm {
    pub fn new(type_: FormType, form_type: Option<&str>) -> Self {
        DataForm {
            type_,
            form_type: form_type.map(str::to_owned),
            fields: Vec::new(),
        }
    }

    pub fn field(&self, var: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.var == var)
    }
}

impl TryFrom<&Element> for DataForm {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "x", ns::DATA_FORMS)?;
        let type_ = el.get_attr("type").ok_or(XepError::MissingAttr("type"))?;
        let type_ = FormType::parse(type_).ok_or(XepError::BadValue("type"))?;
        let mut form = DataForm {
            type_,
            form_type: None,
            fields: Vec::new(),
        };
        for f in el.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
            let ftype = f.get_attr("type");
            let var = match f.get_attr("var") {
                Some(v) if !v.is_empty() => v,
                // Only a fixed field (a section label) may go without a name.
                _ if ftype == Some("fixed") => continue,
                _ => return Err(XepError::MissingAttr("var")),
            };
            let values: Vec<String> = f
                .children()
                .filter(|c| c.is("value", ns::DATA_FORMS))
                .map(Element::text)
                .collect();
            if var == "FORM_TYPE" {
                let field = Field {
                    var: var.to_owned(),
                    values,
                    ..Field::default()
                };
                form.form_type = field.single()?.map(str::to_owned);
                continue;
            }
            if form.fields.iter().any(|x| x.var == var) {
                return Err(XepError::BadValue("var"));
            }
            form.fields.push(Field {
                var: var.to_owned(),
                type_: ftype.map(str::to_owned),
                label: f.get_attr("label").map(str::to_owned),
                values,
            });
        }
        Ok(form)
    }
}

impl From<DataForm> for Element {
    fn from(form: DataForm) -> Element {
        let mut x = Element::new("x", ns::DATA_FORMS).attr("type", form.type_.as_str());
        if let Some(ft) = form.form_type {
            x.append_child(
                Element::new("field", ns::DATA_FORMS)
                    .attr("var", "FORM_TYPE")
                    .attr("type", "hidden")
                    .child(Element::new("value", ns::DATA_FORMS).text_node(ft)),
            );
        }
        for f in form.fields {
            let mut e = Element::new("field", ns::DATA_FORMS).attr("var", f.var);
            if let Some(t) = f.type_ {
                e.set_attr("type", t);
            }
            if let Some(l) = f.label {
                e.set_attr("label", l);
            }
            for v in f.values {
                let value = Element::new("value", ns::DATA_FORMS);
                e.append_child(if v.is_empty() {
                    value
                } else {
                    value.text_node(v)
                });
            }
            x.append_child(e);
        }
        x
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn field(var: &str, values: &[&str]) -> Element {
        let mut f = Element::new("field", ns::DATA_FORMS).attr("var", var);
        for v in values {
            f.append_child(Element::new("value", ns::DATA_FORMS).text_node(*v));
        }
        f
    }

    #[test]
    fn parses_a_submission() {
        let el = Element::new("x", ns::DATA_FORMS)
            .attr("type", "submit")
            .child(field("FORM_TYPE", &["urn:xmpp:mam:2"]).attr("type", "hidden"))
            .child(field("with", &["juliet@capulet.lit"]))
            .child(field("ids", &["a", "b"]).attr("type", "text-multi"))
            .child(
                Element::new("field", ns::DATA_FORMS)
                    .attr("type", "fixed")
                    .child(Element::new("value", ns::DATA_FORMS).text_node("section")),
            );
        let f = DataForm::try_from(&el).unwrap();
        assert_eq!(f.type_, FormType::Submit);
        assert_eq!(f.form_type.as_deref(), Some("urn:xmpp:mam:2"));
        assert_eq!(f.fields.len(), 2);
        assert_eq!(
            f.field("with").unwrap().single(),
            Ok(Some("juliet@capulet.lit"))
        );
        assert_eq!(f.field("ids").unwrap().values, ["a", "b"]);
        assert_eq!(
            f.field("ids").unwrap().single(),
            Err(XepError::BadValue("field"))
        );
        assert!(f.field("start").is_none());
    }

    #[test]
    fn round_trip_and_size() {
        let mut form = DataForm::new(FormType::Form, Some("urn:xmpp:mam:2"));
        form.fields.push(Field::new("with", Some("jid-single")));
        let mut start = Field::new("start", Some("text-single"));
        start.label = Some("Start <time>".into());
        form.fields.push(start.value("2010-08-07T00:00:00Z"));
        form.fields
            .push(Field::new("ids", Some("text-multi")).value(""));
        let el = Element::from(form.clone());
        assert_eq!(el.get_attr("type"), Some("form"));
        assert_eq!(
            el.children().next().and_then(|f| f.get_attr("var")),
            Some("FORM_TYPE")
        );
        assert_eq!(DataForm::try_from(&el), Ok(form));
        assert!(std::mem::size_of::<DataForm>() <= 64);
    }

    #[test]
    fn rejects_bad_input() {
        let x = |ty: Option<&str>| {
            let el = Element::new("x", ns::DATA_FORMS);
            match ty {
                Some(t) => el.attr("type", t),
                None => el,
            }
        };
        assert_eq!(
            DataForm::try_from(&x(None)),
            Err(XepError::MissingAttr("type"))
        );
        assert_eq!(
            DataForm::try_from(&x(Some("filled"))),
            Err(XepError::BadValue("type"))
        );
        let no_var = x(Some("submit")).child(Element::new("field", ns::DATA_FORMS));
        assert_eq!(
            DataForm::try_from(&no_var),
            Err(XepError::MissingAttr("var"))
        );
        let twice = x(Some("submit"))
            .child(field("with", &["a@b"]))
            .child(field("with", &["c@d"]));
        assert_eq!(DataForm::try_from(&twice), Err(XepError::BadValue("var")));
        let two_types = x(Some("submit")).child(field("FORM_TYPE", &["a", "b"]));
        assert_eq!(
            DataForm::try_from(&two_types),
            Err(XepError::BadValue("field"))
        );
        assert_eq!(
            DataForm::try_from(&Element::new("x", "jabber:x:oob")),
            Err(XepError::WrongElement("x"))
        );
    }
}
