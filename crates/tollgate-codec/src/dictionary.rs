//! Diameter dictionaries: AVP definitions (type, flag rules, enumerated values, grouped
//! grammar) and command grammars (RFC 6733 §3.2 CCF), read from XML files in the
//! go-diameter / diameter-rs shape, and validation of a message against them.
//!
//! The four files under `dictionaries/` are embedded at build time ([`Dictionary::builtin`]);
//! operators add vendor dictionaries at run time ([`Dictionary::with_files`]): a later file may
//! define new AVPs and commands or redefine existing ones.
//!
//! File shape (see `dictionaries/base.xml`):
//! ```xml
//! <diameter>
//!   <application id="4" name="Credit-Control">
//!     <command code="272" short="CC" name="Credit-Control">
//!       <request><rule avp="Session-Id" required="true" max="1" fixed="true"/>…</request>
//!       <answer>…</answer>
//!     </command>
//!     <avp name="CC-Request-Type" code="416" must="M" may="P" must-not="V">
//!       <data type="Enumerated"><item code="1" name="INITIAL_REQUEST"/>…</data>
//!     </avp>
//!   </application>
//! </diameter>
//! ```
//! A rule's `required` gives a minimum of 1 (else 0) unless `min` is set; `max` absent means
//! unbounded; `<rule avp="AVP"/>` is the grammar's `*[AVP]`.

use crate::avp::{Avp, AvpCode, AvpFlags, AvpRef, BadLength};
use crate::error::ProtocolError;
use crate::header::{ApplicationId, CommandCode};
use crate::message::{Limits, Message};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::OnceLock;

/// The data formats of RFC 6733 §4.2–4.3 (plus QoSFilterRule, RFC 6733 §4.3.1 / RFC 4006).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AvpType {
    OctetString,
    Integer32,
    Integer64,
    Unsigned32,
    Unsigned64,
    Float32,
    Float64,
    Grouped,
    Address,
    Time,
    UTF8String,
    DiameterIdentity,
    DiameterURI,
    Enumerated,
    IPFilterRule,
    QoSFilterRule,
}

impl AvpType {
    pub const ALL: [AvpType; 16] = [
        AvpType::OctetString,
        AvpType::Integer32,
        AvpType::Integer64,
        AvpType::Unsigned32,
        AvpType::Unsigned64,
        AvpType::Float32,
        AvpType::Float64,
        AvpType::Grouped,
        AvpType::Address,
        AvpType::Time,
        AvpType::UTF8String,
        AvpType::DiameterIdentity,
        AvpType::DiameterURI,
        AvpType::Enumerated,
        AvpType::IPFilterRule,
        AvpType::QoSFilterRule,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AvpType::OctetString => "OctetString",
            AvpType::Integer32 => "Integer32",
            AvpType::Integer64 => "Integer64",
            AvpType::Unsigned32 => "Unsigned32",
            AvpType::Unsigned64 => "Unsigned64",
            AvpType::Float32 => "Float32",
            AvpType::Float64 => "Float64",
            AvpType::Grouped => "Grouped",
            AvpType::Address => "Address",
            AvpType::Time => "Time",
            AvpType::UTF8String => "UTF8String",
            AvpType::DiameterIdentity => "DiameterIdentity",
            AvpType::DiameterURI => "DiameterURI",
            AvpType::Enumerated => "Enumerated",
            AvpType::IPFilterRule => "IPFilterRule",
            AvpType::QoSFilterRule => "QoSFilterRule",
        }
    }

    pub fn parse(s: &str) -> Option<AvpType> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Payload size of the fixed-size types (§4.2).
    pub fn fixed_len(self) -> Option<usize> {
        match self {
            AvpType::Integer32
            | AvpType::Unsigned32
            | AvpType::Float32
            | AvpType::Enumerated
            | AvpType::Time => Some(4),
            AvpType::Integer64 | AvpType::Unsigned64 | AvpType::Float64 => Some(8),
            _ => None,
        }
    }

    /// The zeroed minimum payload §7.5 asks for in a Failed-AVP.
    pub fn zeroed(self) -> Bytes {
        match self {
            AvpType::Address => Bytes::from_static(&[0, 1, 0, 0, 0, 0]),
            t => Bytes::from(vec![0u8; t.fixed_len().unwrap_or(0)]),
        }
    }

    fn is_text(self) -> bool {
        matches!(
            self,
            AvpType::UTF8String
                | AvpType::DiameterIdentity
                | AvpType::DiameterURI
                | AvpType::IPFilterRule
                | AvpType::QoSFilterRule
        )
    }
}

/// What validation does with an AVP it does not know that has the M bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownAvps {
    /// RFC 6733 §4.1: refuse the message with 5001 DIAMETER_AVP_UNSUPPORTED.
    #[default]
    Refuse,
    /// Accept an unknown vendor-specific AVP (Vendor-Id ≠ 0) inside a Grouped AVP whose
    /// grammar ends in `*[AVP]`; at the top level, and for IETF AVPs, §4.1 still holds. An
    /// operator's choice for a client that sends newer 3GPP AVPs than our dictionaries know.
    AcceptVendorInOpenGroups,
}

/// An unknown AVP that [`UnknownAvps::AcceptVendorInOpenGroups`] let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownAvp {
    pub code: u32,
    pub vendor_id: u32,
}

/// What [`Dictionary::validate_with`] accepted that the strict rule would have refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValidationReport {
    /// Unknown M-bit AVPs accepted by the policy.
    pub unknown_accepted: u32,
    /// The first of them, in wire order.
    pub first_unknown: Option<UnknownAvp>,
}

/// The state of one validation walk: its bounds, its policy and what it has seen.
struct Walk<'l> {
    limits: &'l Limits,
    unknown: UnknownAvps,
    /// AVPs seen so far, grouped members included (bounded by `limits.max_avps`).
    count: usize,
    report: ValidationReport,
}

/// Whether a flag must, may or must not be set (RFC 6733 §4.5 tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagRule {
    Must,
    May,
    MustNot,
}

/// One line of a grammar: which AVP, how many times, and whether in a fixed position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub code: u32,
    pub vendor: u32,
    pub min: u32,
    pub max: Option<u32>,
    pub fixed: bool,
}

/// A CCF grammar: rules plus whether `*[AVP]` admits anything else.
#[derive(Clone, Debug, Default)]
pub struct Grammar {
    pub rules: Vec<Rule>,
    pub any_other: bool,
    /// (code/vendor key, rule position), sorted by key: a binary search over a few dozen
    /// entries beats hashing on the per-AVP path.
    index: Vec<(u64, u16)>,
}

impl Grammar {
    fn rule_index(&self, code: u32, vendor: u32) -> Option<usize> {
        let k = key(code, vendor);
        self.index
            .binary_search_by_key(&k, |(k, _)| *k)
            .ok()
            .map(|i| usize::from(self.index[i].1))
    }
}

/// One AVP definition.
#[derive(Clone, Debug)]
pub struct AvpDef {
    pub name: String,
    pub code: u32,
    pub vendor: u32,
    pub avp_type: AvpType,
    pub m_rule: FlagRule,
    /// Enumerated values, sorted by value.
    pub items: Vec<(i32, String)>,
    pub grammar: Option<Grammar>,
    /// From a dictionary that describes messages rather than judges them (Wireshark's, see
    /// `crate::wireshark`): its enumerated values and its "M must not" rule name and document,
    /// but a value outside the list or an M bit it does not expect is not refused. Loading it
    /// must never make Tollgate refuse what it accepted without it.
    pub describes_only: bool,
}

impl AvpDef {
    /// The name of an enumerated value.
    pub fn item_name(&self, value: i32) -> Option<&str> {
        self.items
            .binary_search_by_key(&value, |(v, _)| *v)
            .ok()
            .map(|i| self.items[i].1.as_str())
    }

    /// Code and vendor, with the M bit the definition wants us to send.
    pub fn avp_code(&self) -> AvpCode {
        AvpCode::new(self.code, self.vendor, self.m_rule == FlagRule::Must)
    }
}

/// A command's request and answer grammars.
#[derive(Clone, Debug)]
pub struct CommandDef {
    pub code: u32,
    pub application: u32,
    pub name: String,
    pub short: String,
    pub request: Grammar,
    pub answer: Grammar,
}

/// A dictionary file that could not be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DictionaryError {
    #[error("{file}: {message}")]
    Xml { file: String, message: String },
    #[error("{file}:{line}: {message}")]
    Definition {
        file: String,
        line: u32,
        message: String,
    },
    #[error("{file}: cannot read: {message}")]
    Io { file: String, message: String },
}

/// The embedded dictionaries, in load order.
pub const BUILTIN: [(&str, &str); 5] = [
    (
        "dictionaries/base.xml",
        include_str!("../../../dictionaries/base.xml"),
    ),
    (
        "dictionaries/credit-control.xml",
        include_str!("../../../dictionaries/credit-control.xml"),
    ),
    (
        "dictionaries/3gpp-ro.xml",
        include_str!("../../../dictionaries/3gpp-ro.xml"),
    ),
    (
        "dictionaries/3gpp-gy.xml",
        include_str!("../../../dictionaries/3gpp-gy.xml"),
    ),
    (
        "dictionaries/oma-im.xml",
        include_str!("../../../dictionaries/oma-im.xml"),
    ),
];

/// All AVP and command definitions known to this process.
#[derive(Clone, Debug, Default)]
pub struct Dictionary {
    avps: Vec<AvpDef>,
    avp_index: FastMap<u64, usize>,
    /// Direct tables for the two vendors nearly every AVP belongs to (IETF 0, 3GPP 10415),
    /// indexed by code: the validator looks up every AVP of every message.
    direct: [Vec<u32>; 2],
    name_index: HashMap<String, usize>,
    commands: Vec<CommandDef>,
    command_index: FastMap<u64, usize>,
    applications: BTreeMap<u32, String>,
}

/// A rule as written, before names are resolved to codes.
struct RawRule {
    name: String,
    min: u32,
    max: Option<u32>,
    fixed: bool,
    file: String,
    line: u32,
}

#[derive(Default)]
struct Loader {
    dict: Dictionary,
    /// Grammars to resolve once every file is read: (avp index or command slot, rules).
    avp_rules: Vec<(usize, Vec<RawRule>)>,
    command_rules: Vec<(usize, Vec<RawRule>, Vec<RawRule>)>,
}

impl Dictionary {
    /// The embedded base, credit-control, 3GPP Ro and OMA IM dictionaries, parsed once.
    pub fn builtin() -> &'static Dictionary {
        static BUILTIN_DICT: OnceLock<Dictionary> = OnceLock::new();
        BUILTIN_DICT.get_or_init(|| match Dictionary::from_sources(&BUILTIN) {
            Ok(d) => d,
            // The embedded files are checked by this crate's tests; a failure here is a build
            // defect, not bad input.
            Err(e) => panic!("embedded dictionary is invalid: {e}"),
        })
    }

    /// The embedded dictionaries plus extra files, read in order (later definitions win).
    pub fn with_files<P: AsRef<Path>>(files: &[P]) -> Result<Dictionary, DictionaryError> {
        Self::with_files_filled(files, |_| {})
    }

    /// [`Dictionary::with_files`], then `fill` adds what those lack (see [`FillIn`]).
    pub(crate) fn with_files_filled<P: AsRef<Path>>(
        files: &[P],
        fill: impl FnOnce(&mut FillIn<'_>),
    ) -> Result<Dictionary, DictionaryError> {
        let mut texts = Vec::with_capacity(files.len());
        for f in files {
            let f = f.as_ref();
            let text = std::fs::read_to_string(f).map_err(|e| DictionaryError::Io {
                file: f.display().to_string(),
                message: e.to_string(),
            })?;
            texts.push((f.display().to_string(), text));
        }
        let mut sources: Vec<(&str, &str)> = BUILTIN.to_vec();
        sources.extend(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())));
        Self::from_sources_filled(&sources, fill)
    }

    /// Parses `(file name, XML text)` pairs in order.
    pub fn from_sources(sources: &[(&str, &str)]) -> Result<Dictionary, DictionaryError> {
        let mut loader = Loader::default();
        for (file, text) in sources {
            loader.load(file, text)?;
        }
        loader.resolve()
    }

    /// The definition of an AVP by code and vendor.
    pub fn avp(&self, code: u32, vendor: u32) -> Option<&AvpDef> {
        self.avp_index
            .get(&key(code, vendor))
            .map(|&i| &self.avps[i])
    }

    /// The definition of an AVP by name.
    pub fn avp_by_name(&self, name: &str) -> Option<&AvpDef> {
        self.name_index.get(name).map(|&i| &self.avps[i])
    }

    /// The AVP definition matching a decoded AVP.
    pub fn avp_of(&self, avp: &Avp) -> Option<&AvpDef> {
        self.avp(avp.code, avp.vendor())
    }

    pub fn avps(&self) -> impl Iterator<Item = &AvpDef> {
        self.avps.iter()
    }

    pub fn command(&self, application: ApplicationId, code: CommandCode) -> Option<&CommandDef> {
        self.command_index
            .get(&key(code.0, application.0))
            .map(|&i| &self.commands[i])
    }

    pub fn commands(&self) -> impl Iterator<Item = &CommandDef> {
        self.commands.iter()
    }

    /// Whether any loaded file defines this application.
    pub fn has_application(&self, application: ApplicationId) -> bool {
        self.applications.contains_key(&application.0)
    }

    pub fn application_name(&self, application: ApplicationId) -> Option<&str> {
        self.applications.get(&application.0).map(String::as_str)
    }

    /// Validates a decoded message against its command grammar and every AVP against its
    /// definition, recursively (RFC 6733 §7.1.5, §4.5, §4.4). Returns the first error, as
    /// §7.5 asks ("only the first error"), in wire order, then missing AVPs. Unknown AVPs with
    /// the M bit are refused (§4.1, [`UnknownAvps::Refuse`]).
    pub fn validate(&self, msg: &Message, limits: &Limits) -> Result<(), ProtocolError> {
        self.validate_with(msg, limits, UnknownAvps::Refuse)
            .map(|_| ())
    }

    /// [`Dictionary::validate`] under a policy for unknown M-bit AVPs; the report says which
    /// unknown AVPs the policy let through, for the caller to log and count.
    pub fn validate_with(
        &self,
        msg: &Message,
        limits: &Limits,
        unknown: UnknownAvps,
    ) -> Result<ValidationReport, ProtocolError> {
        let h = msg.header;
        let Some(cmd) = self.command(h.application, h.command) else {
            return Err(if self.has_application(h.application) {
                ProtocolError::CommandUnsupported(h.command)
            } else {
                ProtocolError::ApplicationUnsupported(h.application)
            });
        };
        // §3: the peer-to-peer commands of §5 are never proxied; every other command this
        // dictionary serves (CCR, RAR, ASR, STR, ACR) is "REQ, PXY".
        let peer_command = h.application.0 == 0
            && matches!(
                h.command,
                CommandCode::CAPABILITIES_EXCHANGE
                    | CommandCode::DEVICE_WATCHDOG
                    | CommandCode::DISCONNECT_PEER
            );
        if h.flags.is_request() && h.flags.is_proxiable() == peer_command {
            return Err(ProtocolError::InvalidHeaderBits {
                flags: h.flags.0,
                reason: if peer_command {
                    "P bit set on a peer-to-peer command"
                } else {
                    "P bit clear on a proxiable command"
                },
            });
        }
        let grammar = if h.flags.is_request() {
            Some(&cmd.request)
        } else if h.flags.is_error() {
            // E-bit answers follow the generic error grammar of §7.2: check values only.
            None
        } else {
            Some(&cmd.answer)
        };
        let mut walk = Walk {
            limits,
            unknown,
            count: 0,
            report: ValidationReport::default(),
        };
        self.check_group(
            grammar,
            msg.avps.iter().map(|a| Ok(a.as_ref())),
            0,
            &mut walk,
        )?;
        Ok(walk.report)
    }

    fn check_group<'a>(
        &self,
        grammar: Option<&Grammar>,
        avps: impl Iterator<Item = Result<AvpRef<'a>, BadLength>>,
        depth: usize,
        walk: &mut Walk<'_>,
    ) -> Result<(), ProtocolError> {
        // Occurrence counts per rule (saturating: only "more than max" matters); grammars
        // here have at most a few dozen rules.
        let mut seen = [0u8; 128];
        let mut seen_heap = Vec::new();
        let counts: &mut [u8] = match grammar {
            Some(g) if g.rules.len() > seen.len() => {
                seen_heap.resize(g.rules.len(), 0);
                &mut seen_heap
            }
            _ => &mut seen,
        };
        for (position, avp) in avps.enumerate() {
            let avp = avp?;
            walk.count += 1;
            if walk.count > walk.limits.max_avps {
                return Err(ProtocolError::TooManyAvps {
                    limit: walk.limits.max_avps,
                });
            }
            if avp.flags.0 & AvpFlags::RESERVED != 0 {
                return Err(ProtocolError::InvalidAvpBits {
                    avp: avp.to_owned(),
                });
            }
            let Some(def) = self.avp(avp.code, avp.vendor()) else {
                // §4.1: an unrecognized AVP with M set is refused; without M it is ignored.
                // The tolerant policy lets a vendor's AVP through where the group's grammar
                // ends in *[AVP] (Open5GS sends 3GPP AVPs of later releases there).
                if avp.flags.is_mandatory() {
                    let tolerated = walk.unknown == UnknownAvps::AcceptVendorInOpenGroups
                        && depth > 0
                        && avp.vendor() != 0
                        && grammar.is_some_and(|g| g.any_other);
                    if !tolerated {
                        return Err(ProtocolError::AvpUnsupported {
                            avp: avp.to_owned(),
                        });
                    }
                    walk.report.unknown_accepted += 1;
                    walk.report.first_unknown.get_or_insert(UnknownAvp {
                        code: avp.code,
                        vendor_id: avp.vendor(),
                    });
                }
                continue;
            };
            if avp.flags.is_mandatory() && def.m_rule == FlagRule::MustNot && !def.describes_only {
                return Err(ProtocolError::InvalidAvpBitCombo {
                    avp: avp.to_owned(),
                    name: def.name.clone(),
                    reason: "M bit set on an AVP whose M bit must not be set",
                });
            }
            self.check_value(def, &avp, depth, walk)?;
            let Some(g) = grammar else { continue };
            match g.rule_index(avp.code, avp.vendor()) {
                Some(ri) => {
                    let rule = &g.rules[ri];
                    counts[ri] = counts[ri].saturating_add(1);
                    // One too many is 5009 even for a fixed AVP (a second Session-Id is a
                    // repetition, RFC 6733 §7.1.5); a single one out of place is 5008.
                    if rule.max.is_some_and(|max| u32::from(counts[ri]) > max) {
                        return Err(ProtocolError::AvpOccursTooManyTimes {
                            avp: avp.to_owned(),
                        });
                    }
                    if rule.fixed && position != ri {
                        return Err(ProtocolError::AvpNotAllowed {
                            avp: avp.to_owned(),
                        });
                    }
                }
                None if g.any_other => {}
                None => {
                    return Err(ProtocolError::AvpNotAllowed {
                        avp: avp.to_owned(),
                    })
                }
            }
        }
        if let Some(g) = grammar {
            for (ri, rule) in g.rules.iter().enumerate() {
                if u32::from(counts[ri]) < rule.min {
                    return Err(self.missing(rule));
                }
            }
        }
        Ok(())
    }

    fn check_value(
        &self,
        def: &AvpDef,
        avp: &AvpRef<'_>,
        depth: usize,
        walk: &mut Walk<'_>,
    ) -> Result<(), ProtocolError> {
        let t = def.avp_type;
        if let Some(n) = t.fixed_len() {
            if avp.data.len() != n {
                return Err(avp.length_error(n));
            }
        }
        match t {
            AvpType::Enumerated if !def.items.is_empty() && !def.describes_only => {
                let v = avp.i32()?;
                if def.item_name(v).is_none() {
                    return Err(ProtocolError::InvalidAvpValue {
                        avp: avp.to_owned(),
                        reason: "unknown enumerated value",
                    });
                }
            }
            AvpType::Address => avp.check_address()?,
            t if t.is_text() => {
                avp.utf8()?;
            }
            // Failed-AVP carries offending AVPs as they were (§7.5): not ours to judge.
            AvpType::Grouped if def.code == 279 && def.vendor == 0 => {}
            AvpType::Grouped => {
                if depth + 1 > walk.limits.max_depth {
                    return Err(ProtocolError::NestingTooDeep {
                        limit: walk.limits.max_depth,
                    });
                }
                self.check_group(def.grammar.as_ref(), avp.members(), depth + 1, walk)
                    .map_err(|e| e.within(avp))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// §7.5: for a missing AVP, Failed-AVP holds one with the right code and vendor and a
    /// zeroed minimum value.
    fn missing(&self, rule: &Rule) -> ProtocolError {
        let def = self.avp(rule.code, rule.vendor);
        let mandatory = def.is_none_or(|d| d.m_rule == FlagRule::Must);
        let data = def.map(|d| d.avp_type.zeroed()).unwrap_or_default();
        ProtocolError::MissingAvp {
            avp: Avp::new(AvpCode::new(rule.code, rule.vendor, mandatory), data),
            name: rule.name.clone(),
        }
    }
}

impl Loader {
    fn load(&mut self, file: &str, text: &str) -> Result<(), DictionaryError> {
        let doc = roxmltree::Document::parse(text).map_err(|e| DictionaryError::Xml {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        let line = |n: roxmltree::Node| doc.text_pos_at(n.range().start).row;
        let err = |n: roxmltree::Node, message: String| DictionaryError::Definition {
            file: file.to_string(),
            line: line(n),
            message,
        };
        let root = doc.root_element();
        if root.tag_name().name() != "diameter" {
            return Err(err(root, "root element must be <diameter>".into()));
        }
        for app in root.children().filter(|n| n.has_tag_name("application")) {
            let app_id: u32 = parse_attr(app, "id").map_err(|m| err(app, m))?;
            let app_name = app.attribute("name").unwrap_or("").to_string();
            self.dict.applications.insert(app_id, app_name);
            for node in app.children().filter(roxmltree::Node::is_element) {
                match node.tag_name().name() {
                    "avp" => self
                        .load_avp(node, file, line(node))
                        .map_err(|m| err(node, m))?,
                    "command" => self
                        .load_command(node, app_id, file, &line)
                        .map_err(|m| err(node, m))?,
                    "vendor" => {}
                    other => return Err(err(node, format!("unexpected element <{other}>"))),
                }
            }
        }
        Ok(())
    }

    fn load_avp(&mut self, node: roxmltree::Node, file: &str, line: u32) -> Result<(), String> {
        let name = node
            .attribute("name")
            .ok_or("<avp> without name")?
            .to_string();
        let code: u32 = parse_attr(node, "code")?;
        let vendor: u32 = match node.attribute("vendor-id") {
            Some(_) => parse_attr(node, "vendor-id")?,
            None => 0,
        };
        let has = |attr: &str| {
            node.attribute(attr)
                .is_some_and(|v| v.split(',').any(|f| f.trim() == "M"))
        };
        let m_rule = if has("must") {
            FlagRule::Must
        } else if has("must-not") {
            FlagRule::MustNot
        } else {
            FlagRule::May
        };
        let data = node
            .children()
            .find(|n| n.has_tag_name("data"))
            .ok_or_else(|| format!("AVP {name} has no <data>"))?;
        let type_name = data.attribute("type").unwrap_or("");
        let avp_type = AvpType::parse(type_name)
            .ok_or_else(|| format!("AVP {name}: unknown data type {type_name:?}"))?;
        let mut items = Vec::new();
        let mut rules = Vec::new();
        for c in data.children().filter(roxmltree::Node::is_element) {
            match c.tag_name().name() {
                "item" => items.push((
                    parse_attr::<i32>(c, "code")?,
                    c.attribute("name").unwrap_or("").to_string(),
                )),
                "rule" => rules.push(raw_rule(c, file, line)?),
                other => return Err(format!("AVP {name}: unexpected <{other}> in <data>")),
            }
        }
        items.sort_by_key(|(v, _)| *v);
        let def = AvpDef {
            name: name.clone(),
            code,
            vendor,
            avp_type,
            m_rule,
            items,
            grammar: None,
            describes_only: false,
        };
        let k = key(code, vendor);
        let idx = match self.dict.avp_index.get(&k) {
            // A later file redefines the AVP (vendor extension): replace it in place.
            Some(&i) => {
                let old = std::mem::replace(&mut self.dict.avps[i], def);
                self.dict.name_index.remove(&old.name);
                i
            }
            None => {
                self.dict.avps.push(def);
                self.dict.avps.len() - 1
            }
        };
        if let Some(&other) = self.dict.name_index.get(&name) {
            if other != idx {
                let o = &self.dict.avps[other];
                return Err(format!(
                    "AVP name {name} already defined with code {} vendor {}",
                    o.code, o.vendor
                ));
            }
        }
        self.dict.avp_index.insert(k, idx);
        self.dict.name_index.insert(name, idx);
        if avp_type == AvpType::Grouped {
            self.avp_rules.retain(|(i, _)| *i != idx);
            self.avp_rules.push((idx, rules));
        }
        Ok(())
    }

    fn load_command(
        &mut self,
        node: roxmltree::Node,
        application: u32,
        file: &str,
        line: &dyn Fn(roxmltree::Node) -> u32,
    ) -> Result<(), String> {
        let code: u32 = parse_attr(node, "code")?;
        let name = node.attribute("name").unwrap_or("").to_string();
        let short = node.attribute("short").unwrap_or("").to_string();
        let rules_of = |tag: &str| -> Result<Vec<RawRule>, String> {
            let Some(part) = node.children().find(|n| n.has_tag_name(tag)) else {
                return Err(format!("command {name} has no <{tag}>"));
            };
            part.children()
                .filter(|n| n.has_tag_name("rule"))
                .map(|r| raw_rule(r, file, line(r)))
                .collect()
        };
        let request = rules_of("request")?;
        let answer = rules_of("answer")?;
        let def = CommandDef {
            code,
            application,
            name,
            short,
            request: Grammar::default(),
            answer: Grammar::default(),
        };
        let k = key(code, application);
        let idx = match self.dict.command_index.get(&k) {
            Some(&i) => {
                self.dict.commands[i] = def;
                i
            }
            None => {
                self.dict.commands.push(def);
                self.dict.commands.len() - 1
            }
        };
        self.dict.command_index.insert(k, idx);
        self.command_rules.retain(|(i, _, _)| *i != idx);
        self.command_rules.push((idx, request, answer));
        Ok(())
    }

    fn resolve(mut self) -> Result<Dictionary, DictionaryError> {
        let mut direct = [vec![NO_AVP; DIRECT_CODES], vec![NO_AVP; DIRECT_CODES]];
        for (i, d) in self.dict.avps.iter().enumerate() {
            let slot = match d.vendor {
                0 => 0,
                10415 => 1,
                _ => continue,
            };
            if let Some(e) = direct[slot].get_mut(d.code as usize) {
                *e = i as u32;
            }
        }
        self.dict.direct = direct;
        let avp_rules = std::mem::take(&mut self.avp_rules);
        for (idx, rules) in avp_rules {
            let g = self.grammar(rules)?;
            self.dict.avps[idx].grammar = Some(g);
        }
        let command_rules = std::mem::take(&mut self.command_rules);
        for (idx, req, ans) in command_rules {
            let request = self.grammar(req)?;
            let answer = self.grammar(ans)?;
            let c = &mut self.dict.commands[idx];
            c.request = request;
            c.answer = answer;
        }
        Ok(self.dict)
    }

    fn grammar(&self, raw: Vec<RawRule>) -> Result<Grammar, DictionaryError> {
        let mut g = Grammar::default();
        for r in raw {
            if r.name == "AVP" {
                g.any_other = true;
                continue;
            }
            let Some(def) = self.dict.avp_by_name(&r.name) else {
                return Err(DictionaryError::Definition {
                    file: r.file,
                    line: r.line,
                    message: format!("rule names undefined AVP {}", r.name),
                });
            };
            let position =
                u16::try_from(g.rules.len()).map_err(|_| DictionaryError::Definition {
                    file: r.file.clone(),
                    line: r.line,
                    message: "more than 65535 rules in one grammar".into(),
                })?;
            match g
                .index
                .binary_search_by_key(&key(def.code, def.vendor), |(k, _)| *k)
            {
                Ok(_) => {}
                Err(at) => g.index.insert(at, (key(def.code, def.vendor), position)),
            }
            g.rules.push(Rule {
                name: r.name,
                code: def.code,
                vendor: def.vendor,
                min: r.min,
                max: r.max,
                fixed: r.fixed,
            });
        }
        Ok(g)
    }
}

fn raw_rule(node: roxmltree::Node, file: &str, line: u32) -> Result<RawRule, String> {
    let name = node
        .attribute("avp")
        .ok_or("<rule> without avp")?
        .to_string();
    let required = node.attribute("required") == Some("true");
    let min = match node.attribute("min") {
        Some(_) => parse_attr(node, "min")?,
        None => u32::from(required),
    };
    let max = match node.attribute("max") {
        Some(_) => Some(parse_attr(node, "max")?),
        None => None,
    };
    Ok(RawRule {
        name,
        min,
        max,
        fixed: node.attribute("fixed") == Some("true"),
        file: file.to_string(),
        line,
    })
}

fn parse_attr<T: std::str::FromStr>(node: roxmltree::Node, attr: &str) -> Result<T, String> {
    let v = node
        .attribute(attr)
        .ok_or_else(|| format!("<{}> needs attribute {attr}", node.tag_name().name()))?;
    v.trim().parse().map_err(|_| {
        format!(
            "<{}> attribute {attr}={v:?} is not a valid number",
            node.tag_name().name()
        )
    })
}

/// Codes below this go in the direct tables (IETF and 3GPP codes are all below it).
const DIRECT_CODES: usize = 8192;
const NO_AVP: u32 = u32::MAX;

fn key(code: u32, scope: u32) -> u64 {
    (u64::from(scope) << 32) | u64::from(code)
}

/// A multiplicative hash for the u64 keys above: the std SipHash is needlessly slow for
/// keys that are not attacker-chosen in bulk (the tables are built from our own files).
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

// ---------------------------------------------------------------------------------------------
// Filling in from another dictionary format (`crate::wireshark`). Kept apart from the loader
// and the validator above: it only adds what the XML files loaded first do not define.

/// Adds definitions to a dictionary being loaded, never replacing one: what the files loaded
/// first (ours) define stays as they define it.
pub(crate) struct FillIn<'a> {
    loader: &'a mut Loader,
}

impl Dictionary {
    /// [`Dictionary::from_sources`], then `fill` adds what those sources lack, then grammars
    /// are resolved (so a rule in the sources may name an AVP the fill adds).
    pub(crate) fn from_sources_filled(
        sources: &[(&str, &str)],
        fill: impl FnOnce(&mut FillIn<'_>),
    ) -> Result<Dictionary, DictionaryError> {
        let mut loader = Loader::default();
        for (file, text) in sources {
            loader.load(file, text)?;
        }
        fill(&mut FillIn {
            loader: &mut loader,
        });
        loader.resolve()
    }
}

impl FillIn<'_> {
    /// The name of the AVP with this code and vendor, if one is defined.
    pub(crate) fn avp_name(&self, code: u32, vendor: u32) -> Option<&str> {
        let d = &self.loader.dict;
        d.avp_index
            .get(&key(code, vendor))
            .map(|&i| d.avps[i].name.as_str())
    }

    pub(crate) fn name_taken(&self, name: &str) -> bool {
        self.loader.dict.name_index.contains_key(name)
    }

    /// Adds `def` unless its code and vendor or its name is defined. A Grouped AVP gets the
    /// grammar `*[member] … *[AVP]`; `members` must name defined (or added) AVPs.
    pub(crate) fn add_avp(
        &mut self,
        def: AvpDef,
        members: &[String],
        file: &str,
        line: u32,
    ) -> bool {
        let k = key(def.code, def.vendor);
        let d = &mut self.loader.dict;
        if d.avp_index.contains_key(&k) || d.name_index.contains_key(&def.name) {
            return false;
        }
        let idx = d.avps.len();
        let grouped = def.avp_type == AvpType::Grouped;
        d.avp_index.insert(k, idx);
        d.name_index.insert(def.name.clone(), idx);
        d.avps.push(def);
        if grouped {
            self.loader
                .avp_rules
                .push((idx, open_rules(members, file, line)));
        }
        true
    }

    /// Adds a command with the grammar `*[AVP]` for request and answer, unless its code is
    /// defined in that application.
    pub(crate) fn add_command(
        &mut self,
        code: u32,
        application: u32,
        name: &str,
        file: &str,
        line: u32,
    ) -> bool {
        let k = key(code, application);
        let d = &mut self.loader.dict;
        if d.command_index.contains_key(&k) {
            return false;
        }
        let idx = d.commands.len();
        d.commands.push(CommandDef {
            code,
            application,
            name: name.to_string(),
            short: String::new(),
            request: Grammar::default(),
            answer: Grammar::default(),
        });
        d.command_index.insert(k, idx);
        self.loader.command_rules.push((
            idx,
            open_rules(&[], file, line),
            open_rules(&[], file, line),
        ));
        true
    }
}

impl FillIn<'_> {
    /// Names an application unless it is named already.
    pub(crate) fn add_application(&mut self, id: u32, name: &str) {
        self.loader
            .dict
            .applications
            .entry(id)
            .or_insert_with(|| name.to_string());
    }
}

/// `*[member] … *[AVP]`: any number of each member, anything else besides.
fn open_rules(members: &[String], file: &str, line: u32) -> Vec<RawRule> {
    members
        .iter()
        .map(String::as_str)
        .chain(["AVP"])
        .map(|name| RawRule {
            name: name.to_string(),
            min: 0,
            max: None,
            fixed: false,
            file: file.to_string(),
            line,
        })
        .collect()
}
