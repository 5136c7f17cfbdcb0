//! `adapter_config.json` (FORMATS.md Part II §3.1): parsing PEFT's file into typed method configs
//! and writing ours. Unknown keys are ignored on read and carried through to the next write; keys
//! that would change the computation in ways we do not implement (DoRA, biases, rank patterns, ...)
//! are refused, all of them listed in one error.

use super::ia3::Ia3Config;
use super::lora::{check_sites, LoraConfig};
use super::prefix::{PrefixConfig, PrefixInit};
use super::prompt::PromptConfig;
use super::target::{ModelDims, Site, Target};
use super::Method;
use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// Config values that are not part of the method's math but belong in the file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeftMeta {
    /// The base model's hub id or path (`null` when unknown).
    pub base_model_name_or_path: Option<String>,
    /// Keys of a loaded config that we do not interpret, written back unchanged.
    pub extra: Map<String, Value>,
}

/// Per-method settings.
#[derive(Clone, Debug, PartialEq)]
pub enum MethodConfig {
    Lora(LoraConfig),
    Ia3(Ia3Config),
    Prefix(PrefixConfig),
    Prompt(PromptConfig),
}

/// A whole adapter_config.json.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftConfig {
    pub method: MethodConfig,
    pub meta: PeftMeta,
}

/// LoRA keys that change the computation; any value other than null/false/"none"/{}/[] is refused.
const LORA_UNSUPPORTED: &[&str] = &[
    "use_dora",
    "lora_bias",
    "fan_in_fan_out",
    "rank_pattern",
    "alpha_pattern",
    "modules_to_save",
    "target_parameters",
    "trainable_token_indices",
    "layer_replication",
    "alora_invocation_tokens",
    "use_qalora",
    "use_bdlora",
    "arrow_config",
    "bias",
];
const IA3_UNSUPPORTED: &[&str] = &["fan_in_fan_out", "modules_to_save"];
const PROMPT_UNSUPPORTED: &[&str] = &["modules_to_save"];

impl PeftConfig {
    pub fn method_kind(&self) -> Method {
        match self.method {
            MethodConfig::Lora(_) => Method::Lora,
            MethodConfig::Ia3(_) => Method::Ia3,
            MethodConfig::Prefix(_) => Method::Prefix,
            MethodConfig::Prompt(_) => Method::Prompt,
        }
    }

    /// Parses adapter_config.json for a model of `dims`. `file_keys` are the tensor names in the
    /// adapter's safetensors file: when `target_modules` is a regular expression (which we do not
    /// evaluate) the adapted layers are read from them instead.
    pub fn from_json(text: &str, dims: &ModelDims, file_keys: &[String]) -> Result<PeftConfig> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidArgument(format!("adapter_config.json: {e}")))?;
        let Value::Object(mut obj) = value else {
            return Err(Error::InvalidArgument(
                "adapter_config.json: not a JSON object".into(),
            ));
        };
        let mut p = Parser {
            obj: &mut obj,
            errors: Vec::new(),
        };
        let peft_type = p.take_str("peft_type", None).unwrap_or_default();
        let method = Method::from_peft_type(&peft_type).ok_or_else(|| {
            Error::Unsupported(format!(
                "adapter_config.json: peft_type '{peft_type}' (supported: LORA, IA3, \
                 PREFIX_TUNING, PROMPT_TUNING)"
            ))
        })?;
        if let Some(task) = p.take_opt_str("task_type") {
            if task != "CAUSAL_LM" {
                p.errors
                    .push(format!("task_type '{task}' (only CAUSAL_LM is supported)"));
            }
        }
        let base_model_name_or_path = p.take_opt_str("base_model_name_or_path");
        p.obj.remove("inference_mode");
        let method = match method {
            Method::Lora => MethodConfig::Lora(p.lora(dims, file_keys)),
            Method::Ia3 => MethodConfig::Ia3(p.ia3(dims, file_keys)),
            Method::Prefix => MethodConfig::Prefix(p.prefix(dims)),
            Method::Prompt => MethodConfig::Prompt(p.prompt(dims)),
        };
        if !p.errors.is_empty() {
            return Err(Error::Unsupported(format!(
                "adapter_config.json ({}): {}",
                peft_type,
                p.errors.join("; ")
            )));
        }
        Ok(PeftConfig {
            method,
            meta: PeftMeta {
                base_model_name_or_path,
                extra: obj,
            },
        })
    }

    /// The JSON text PEFT would accept: keys sorted, two-space indent (as PEFT writes it).
    pub fn to_json(&self, dims: &ModelDims) -> String {
        let mut obj = self.meta.extra.clone();
        let mut set = |k: &str, v: Value| {
            obj.insert(k.to_string(), v);
        };
        set("peft_type", json!(self.method_kind().peft_type()));
        set("task_type", json!("CAUSAL_LM"));
        set(
            "base_model_name_or_path",
            json!(self.meta.base_model_name_or_path),
        );
        set("inference_mode", json!(true));
        let mut defaults = Map::new();
        defaults.insert("revision".into(), Value::Null);
        defaults.insert("modules_to_save".into(), Value::Null);
        match &self.method {
            MethodConfig::Lora(c) => {
                let (targets, layers) = target_modules_json(&c.sites, dims, true);
                set("r", json!(c.rank));
                set("lora_alpha", number(c.alpha));
                set("lora_dropout", float(c.dropout));
                set("use_rslora", json!(c.rslora));
                set("target_modules", targets);
                set("layers_to_transform", layers);
                for (k, v) in [
                    ("bias", json!("none")),
                    ("fan_in_fan_out", json!(false)),
                    ("init_lora_weights", json!(true)),
                    ("layers_pattern", Value::Null),
                    ("rank_pattern", json!({})),
                    ("alpha_pattern", json!({})),
                    ("use_dora", json!(false)),
                ] {
                    defaults.insert(k.into(), v);
                }
            }
            MethodConfig::Ia3(c) => {
                // PEFT's IA3Config has no layers_to_transform: a layer subset is written as paths.
                let (targets, _) = target_modules_json(&c.sites, dims, false);
                // PEFT checks feedforward_modules ⊆ target_modules as strings: same form.
                let as_paths = targets.as_array().is_some_and(|t| {
                    t.iter()
                        .any(|v| v.as_str().is_some_and(|s| s.contains('.')))
                });
                let mut ff: Vec<String> = if as_paths {
                    c.sites
                        .iter()
                        .filter(|s| c.feedforward.contains(&s.target))
                        .map(|s| s.target.hf_module_path(s.layer))
                        .collect()
                } else {
                    c.feedforward
                        .iter()
                        .map(|t| t.hf_name().to_string())
                        .collect()
                };
                ff.sort_unstable();
                set("target_modules", targets);
                set("feedforward_modules", json!(ff));
                defaults.insert("fan_in_fan_out".into(), json!(false));
                defaults.insert("init_ia3_weights".into(), json!(true));
            }
            MethodConfig::Prefix(c) => {
                // PEFT's GQA rule (_prepare_prompt_learning_config): token_dim and heads of the KV.
                set("num_virtual_tokens", json!(c.num_virtual_tokens));
                set("token_dim", json!(dims.kv_dim()));
                set("num_layers", json!(dims.n_layer));
                set("num_attention_heads", json!(dims.n_head_kv));
                set("encoder_hidden_size", json!(dims.kv_dim()));
                set("prefix_projection", json!(false));
                set("num_transformer_submodules", json!(1));
                set(
                    "init_weights",
                    match c.init {
                        PrefixInit::Zero => json!("zero"),
                        PrefixInit::Random => Value::Null,
                    },
                );
            }
            MethodConfig::Prompt(c) => {
                set("num_virtual_tokens", json!(c.num_virtual_tokens));
                set("token_dim", json!(dims.n_embd));
                set("num_layers", json!(dims.n_layer));
                set("num_attention_heads", json!(dims.n_head));
                set("num_transformer_submodules", json!(1));
                for (k, v) in [
                    ("prompt_tuning_init", json!("RANDOM")),
                    ("prompt_tuning_init_text", Value::Null),
                    ("tokenizer_name_or_path", Value::Null),
                    ("tokenizer_kwargs", Value::Null),
                ] {
                    defaults.insert(k.into(), v);
                }
            }
        }
        for (k, v) in defaults {
            obj.entry(k).or_insert(v);
        }
        // serde_json's Map is a BTreeMap (sorted keys), like PEFT's json.dumps(sort_keys=True).
        serde_json::to_string_pretty(&Value::Object(obj)).expect("a JSON value serializes")
    }
}

/// A float as the shortest decimal of the f32 (0.05 is written 0.05, 0 as 0.0).
fn float(v: f32) -> Value {
    json!(v.to_string().parse::<f64>().unwrap_or(v as f64))
}

/// An integral value as a JSON integer (PEFT writes `"lora_alpha": 16`), otherwise a float.
fn number(v: f32) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        float(v)
    }
}

/// `target_modules` and `layers_to_transform` for a set of sites: short names (plus the layer list
/// when `layer_list` allows one) when the sites are a full (targets × layers) product, otherwise
/// full module paths.
fn target_modules_json(sites: &[Site], dims: &ModelDims, layer_list: bool) -> (Value, Value) {
    let targets: BTreeSet<Target> = sites.iter().map(|s| s.target).collect();
    let layers: BTreeSet<usize> = sites.iter().map(|s| s.layer).collect();
    let product = targets.len() * layers.len() == sites.len();
    if product && (layer_list || layers.len() == dims.n_layer) {
        let mut names: Vec<&str> = targets.iter().map(|t| t.hf_name()).collect();
        names.sort_unstable();
        let layer_value = if layers.len() == dims.n_layer {
            Value::Null
        } else {
            json!(layers.into_iter().collect::<Vec<_>>())
        };
        (json!(names), layer_value)
    } else {
        let paths: Vec<String> = sites
            .iter()
            .map(|s| s.target.hf_module_path(s.layer))
            .collect();
        (json!(paths), Value::Null)
    }
}

/// How `target_modules` / `feedforward_modules` select modules (PEFT `check_target_module_exists`).
enum ModuleSpec {
    /// Module path equals an entry or ends with `.entry`.
    Names(Vec<String>),
    AllLinear,
    /// A regular expression matched against the whole path: not evaluated here.
    Regex(String),
}

impl ModuleSpec {
    fn matches(&self, path: &str) -> Option<bool> {
        match self {
            ModuleSpec::AllLinear => Some(true),
            ModuleSpec::Names(names) => Some(
                names
                    .iter()
                    .any(|n| path == n || path.ends_with(&format!(".{n}"))),
            ),
            ModuleSpec::Regex(_) => None,
        }
    }
}

/// Adapted sites named in the file's keys (`base_model.model.<path>.<suffix>`).
fn sites_in_keys(file_keys: &[String], dims: &ModelDims) -> Vec<Site> {
    let mut sites: Vec<Site> = (0..dims.n_layer)
        .flat_map(|l| Target::ALL.map(|t| Site::new(l, t)))
        .filter(|s| {
            let prefix = format!("base_model.model.{}.", s.target.hf_module_path(s.layer));
            file_keys.iter().any(|k| k.starts_with(&prefix))
        })
        .collect();
    sites.sort();
    sites
}

struct Parser<'a> {
    obj: &'a mut Map<String, Value>,
    errors: Vec<String>,
}

impl Parser<'_> {
    fn bad(&mut self, key: &str, v: &Value, want: &str) {
        self.errors.push(format!("{key} = {v} (expected {want})"));
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.obj.remove(key).filter(|v| !v.is_null())
    }

    fn take_opt_str(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            Value::String(s) => Some(s),
            v => {
                self.bad(key, &v, "a string");
                None
            }
        }
    }

    fn take_str(&mut self, key: &str, default: Option<&str>) -> Option<String> {
        let v = self.take_opt_str(key).or(default.map(str::to_string));
        if v.is_none() {
            self.errors.push(format!("{key} is missing"));
        }
        v
    }

    fn take_usize(&mut self, key: &str, default: Option<usize>) -> usize {
        match self.take(key) {
            Some(v) => match v.as_u64() {
                Some(n) => n as usize,
                None => {
                    self.bad(key, &v, "a non-negative integer");
                    0
                }
            },
            None => default.unwrap_or_else(|| {
                self.errors.push(format!("{key} is missing"));
                0
            }),
        }
    }

    fn take_f32(&mut self, key: &str, default: f32) -> f32 {
        match self.take(key) {
            Some(v) => match v.as_f64() {
                Some(n) => n as f32,
                None => {
                    self.bad(key, &v, "a number");
                    default
                }
            },
            None => default,
        }
    }

    fn take_bool(&mut self, key: &str, default: bool) -> bool {
        match self.take(key) {
            Some(Value::Bool(b)) => b,
            Some(v) => {
                self.bad(key, &v, "true or false");
                default
            }
            None => default,
        }
    }

    /// Refuses non-default values of keys whose feature we do not implement.
    fn refuse_non_default(&mut self, keys: &[&str]) {
        for &k in keys {
            let Some(v) = self.obj.get(k) else { continue };
            let default_like = match v {
                Value::Null | Value::Bool(false) => true,
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::String(s) => s == "none",
                _ => false,
            };
            if !default_like {
                self.errors.push(format!("{k} = {v} is not supported"));
            }
        }
    }

    fn module_spec(&mut self, key: &str, default: &[&str]) -> ModuleSpec {
        match self.take(key) {
            None => ModuleSpec::Names(default.iter().map(|s| s.to_string()).collect()),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("all-linear") => ModuleSpec::AllLinear,
            Some(Value::String(s)) => ModuleSpec::Regex(s),
            Some(Value::Array(items)) => {
                let mut names = Vec::new();
                for it in items {
                    match it {
                        Value::String(s) => names.push(s),
                        v => self.bad(key, &v, "a list of module names"),
                    }
                }
                ModuleSpec::Names(names)
            }
            Some(v) => {
                self.bad(key, &v, "a list of module names or a string");
                ModuleSpec::Names(Vec::new())
            }
        }
    }

    /// `layers_to_transform`: null, an index or a list of indices.
    fn layers(&mut self) -> Option<Vec<usize>> {
        let v = self.take("layers_to_transform")?;
        let list = match &v {
            Value::Number(_) => vec![v.clone()],
            Value::Array(a) if a.is_empty() => return None,
            Value::Array(a) => a.clone(),
            _ => {
                self.bad("layers_to_transform", &v, "an index or a list");
                return None;
            }
        };
        let idx: Option<Vec<usize>> = list
            .iter()
            .map(|x| x.as_u64().and_then(|n| usize::try_from(n).ok()))
            .collect();
        if idx.is_none() {
            self.bad("layers_to_transform", &v, "non-negative indices");
        }
        idx
    }

    /// The adapted sites from target_modules (+ layers_to_transform, exclude_modules).
    fn sites(&mut self, dims: &ModelDims, file_keys: &[String], default: &[&str]) -> Vec<Site> {
        let spec = self.module_spec("target_modules", default);
        let layers = self.layers();
        let exclude = match self.obj.get("exclude_modules") {
            Some(Value::Null) | None => None,
            Some(v) => {
                let v = v.clone();
                let spec = self.module_spec("exclude_modules", &[]);
                self.obj.insert("exclude_modules".into(), v); // written back as it was
                Some(spec)
            }
        };
        if let ModuleSpec::Regex(_) = spec {
            // We do not evaluate regular expressions: the file says which layers it adapts (and
            // the next write lists them by name).
            return sites_in_keys(file_keys, dims);
        }
        let mut sites = Vec::new();
        for l in 0..dims.n_layer {
            for t in Target::ALL {
                let path = t.hf_module_path(l);
                let mut hit = spec.matches(&path) == Some(true);
                // PEFT applies layers_to_transform to list-form target_modules only.
                if hit && matches!(spec, ModuleSpec::Names(_)) {
                    if let Some(ls) = &layers {
                        hit = ls.contains(&l);
                    }
                }
                if hit && exclude.as_ref().and_then(|e| e.matches(&path)) == Some(true) {
                    hit = false;
                }
                if hit {
                    sites.push(Site::new(l, t));
                }
            }
        }
        if let Some(ModuleSpec::Regex(r)) = &exclude {
            self.errors
                .push(format!("exclude_modules regex '{r}' is not supported"));
        }
        if let Some(ls) = &layers {
            if let Some(l) = ls.iter().find(|&&l| l >= dims.n_layer) {
                self.errors.push(format!(
                    "layers_to_transform names layer {l}, the model has {}",
                    dims.n_layer
                ));
            }
        }
        sites
    }

    fn lora(&mut self, dims: &ModelDims, file_keys: &[String]) -> LoraConfig {
        self.refuse_non_default(LORA_UNSUPPORTED);
        if let Some(Value::String(init)) = self.obj.get("init_lora_weights") {
            let lower = init.to_ascii_lowercase();
            if ["pissa", "olora", "corda", "loftq"]
                .iter()
                .any(|p| lower.starts_with(p))
            {
                self.errors.push(format!(
                    "init_lora_weights = '{init}' changes the base weights; convert the adapter \
                     to plain LoRA first (PEFT: path_initial_model_for_weight_conversion)"
                ));
            }
        }
        let rank = self.take_usize("r", Some(8));
        let alpha = self.take_f32("lora_alpha", 8.0);
        let dropout = self.take_f32("lora_dropout", 0.0);
        let rslora = self.take_bool("use_rslora", false);
        let sites = self.sites(dims, file_keys, &["q_proj", "v_proj"]);
        let cfg = LoraConfig {
            rank,
            alpha,
            rslora,
            dropout,
            sites,
        };
        if let Err(e) = check_sites(&cfg.sites, dims) {
            self.errors.push(e.to_string());
        }
        if cfg.sites.is_empty() {
            self.errors
                .push("target_modules matches no linear layer of the model".into());
        }
        cfg
    }

    fn ia3(&mut self, dims: &ModelDims, file_keys: &[String]) -> Ia3Config {
        self.refuse_non_default(IA3_UNSUPPORTED);
        let sites = self.sites(dims, file_keys, &["k_proj", "v_proj", "down_proj"]);
        let ff_spec = self.module_spec("feedforward_modules", &["down_proj"]);
        let feedforward = match ff_spec {
            ModuleSpec::Regex(r) => {
                self.errors.push(format!(
                    "feedforward_modules regex '{r}' is not supported; list the module names"
                ));
                Vec::new()
            }
            // PEFT (list form): any(key.endswith(name)), decided per module.
            spec => {
                let is_ff = |s: &Site| {
                    let path = s.target.hf_module_path(s.layer);
                    match &spec {
                        ModuleSpec::Names(n) => n.iter().any(|n| path.ends_with(n.as_str())),
                        _ => spec.matches(&path) == Some(true),
                    }
                };
                let ff: BTreeSet<Target> = sites
                    .iter()
                    .filter(|s| is_ff(s))
                    .map(|s| s.target)
                    .collect();
                if let Some(s) = sites.iter().find(|s| ff.contains(&s.target) != is_ff(s)) {
                    self.errors.push(format!(
                        "feedforward_modules makes {} feedforward in some layers only ({s} \
                         differs); not supported",
                        s.target.hf_name()
                    ));
                }
                ff.into_iter().collect()
            }
        };
        if sites.is_empty() {
            self.errors
                .push("target_modules matches no linear layer of the model".into());
        }
        Ia3Config { sites, feedforward }
    }

    /// `num_virtual_tokens`, checking the geometry keys against the model. `num_attention_heads`
    /// does not change the flat layout (only `token_dim` does), so it is not checked.
    fn prompt_geometry(&mut self, dims: &ModelDims, token_dim: usize) -> usize {
        let t = self.take_usize("num_virtual_tokens", None);
        let td = self.take_usize("token_dim", Some(token_dim));
        let nl = self.take_usize("num_layers", Some(dims.n_layer));
        let sub = self.take_usize("num_transformer_submodules", Some(1));
        self.obj.remove("num_attention_heads");
        for (k, got, want) in [
            ("token_dim", td, token_dim),
            ("num_layers", nl, dims.n_layer),
            ("num_transformer_submodules", sub, 1),
        ] {
            if got != want {
                self.errors.push(format!(
                    "{k} = {got} does not fit the model (expected {want})"
                ));
            }
        }
        if t == 0 {
            self.errors.push("num_virtual_tokens is 0".into());
        }
        t
    }

    fn prefix(&mut self, dims: &ModelDims) -> PrefixConfig {
        self.refuse_non_default(PROMPT_UNSUPPORTED);
        let n = self.prompt_geometry(dims, dims.kv_dim());
        // A prefix saved with prefix_projection stores the MLP's output, which PEFT itself loads
        // for inference as a plain prefix; so do we (the MLP is not in the file).
        self.obj.remove("prefix_projection");
        self.obj.remove("encoder_hidden_size");
        let init = match self.take_opt_str("init_weights").as_deref() {
            Some("zero") => PrefixInit::Zero,
            _ => PrefixInit::Random,
        };
        PrefixConfig {
            num_virtual_tokens: n,
            init,
        }
    }

    fn prompt(&mut self, dims: &ModelDims) -> PromptConfig {
        self.refuse_non_default(PROMPT_UNSUPPORTED);
        let n = self.prompt_geometry(dims, dims.n_embd);
        PromptConfig {
            num_virtual_tokens: n,
        }
    }
}
