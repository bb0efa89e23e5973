//! How a token is written in a record: its value as a string, as every format so far wrote it;
//! a token of a volume's namespace as `{"token": …, "namespace": …}`, which an older build
//! cannot read (the kinds that may hold one bumped their format with it).

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serializer};

use crate::vault::{Namespace, Token};

fn write<S: Serializer>(t: &Token, s: S) -> Result<S::Ok, S::Error> {
    match t.namespace() {
        None => s.serialize_str(t.expose()),
        Some(ns) => {
            let mut st = s.serialize_struct("Token", 2)?;
            st.serialize_field("token", t.expose())?;
            st.serialize_field("namespace", ns.as_str())?;
            st.end()
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Plain(String),
    InNamespace { token: String, namespace: String },
}

impl Stored {
    fn token<E: serde::de::Error>(self) -> Result<Token, E> {
        match self {
            Stored::Plain(token) => Ok(Token::new(token)),
            Stored::InNamespace { token, namespace } => {
                let ns = Namespace::parse(&namespace)
                    .map_err(|e| E::custom(format!("a token's namespace {e}")))?;
                Ok(Token::new(token).in_namespace(Some(&ns)))
            }
        }
    }
}

/// A wrapper that writes a token as [`write`] does, for sequences and options.
struct Out<'a>(&'a Token);

impl serde::Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        write(self.0, s)
    }
}

pub mod token_serde {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Token, s: S) -> Result<S::Ok, S::Error> {
        write(t, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Token, D::Error> {
        Stored::deserialize(d)?.token()
    }
}

pub mod tokens_serde {
    use super::*;

    pub fn serialize<S: Serializer>(t: &[Token], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(t.iter().map(Out))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Token>, D::Error> {
        Vec::<Stored>::deserialize(d)?.into_iter().map(Stored::token).collect()
    }
}

pub mod opt_token_serde {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<Token>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&Out(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Token>, D::Error> {
        Option::<Stored>::deserialize(d)?.map(Stored::token).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, Deserialize)]
    struct R {
        #[serde(with = "token_serde")]
        t: Token,
        #[serde(with = "tokens_serde")]
        many: Vec<Token>,
        #[serde(with = "opt_token_serde")]
        opt: Option<Token>,
    }

    #[test]
    fn a_token_keeps_its_namespace_and_one_without_is_written_as_before() {
        let ns = Namespace::parse("team-a/app").unwrap();
        let (plain, inns) =
            (Token::new("s.a".into()), Token::new("s.b".into()).in_namespace(Some(&ns)));
        let r = R { t: plain.clone(), many: vec![inns.clone(), plain], opt: Some(inns) };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"t":"s.a","many":[{"token":"s.b","namespace":"team-a/app"},"s.a"],"opt":{"token":"s.b","namespace":"team-a/app"}}"#
        );
        let back: R = serde_json::from_str(&text).unwrap();
        assert_eq!((back.t.expose(), back.t.namespace()), ("s.a", None));
        assert_eq!(back.many[0].namespace(), Some(&ns));
        assert_eq!(back.opt.unwrap().namespace(), Some(&ns));
        let hostile = r#"{"t":{"token":"s.a","namespace":"../x"},"many":[],"opt":null}"#;
        let e = serde_json::from_str::<R>(hostile).err().unwrap().to_string();
        assert!(e.contains("namespace") && !e.contains("s.a"), "{e}");
    }
}
