//! Shared helpers for the optimizer tests: the deterministic parameter/gradient generator of
//! scripts/reference/make_optim_fixtures.py (bit for bit), the fixture loader, a training loop
//! in the order the reference script uses, and ulp distances.
#![allow(dead_code)]

use edgetune::optim::{clip_grad_norm, Optimizer, ParamSet, Schedule, ScheduleKind};
use serde_json::Value;
use std::path::PathBuf;

pub const SIZES: [usize; 4] = [1, 7, 4103, 10000];
pub const NAMES: [&str; 4] = [
    "blk.0.attn_q.lora_a",
    "blk.0.attn_q.lora_b",
    "blk.1.ffn_up.lora_a",
    "blk.1.ffn_up.lora_b",
];
/// (param, begin, end) of always-zero gradient elements.
pub const ZERO_GRAD: (usize, usize, usize) = (3, 512, 768);

fn splitmix(z: u64) -> u64 {
    let mut z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The script's `values(stream, n, scale_log2)`: Irwin-Hall sums of four 16-bit hash fields,
/// centred, times 2^(scale_log2 - 16) (exact in f32).
pub fn values(stream: u64, n: usize, scale_log2: i32) -> Vec<f32> {
    let key = splitmix(stream);
    (0..n as u64)
        .map(|i| {
            let h = splitmix(i ^ key);
            let s: i64 = (0..4)
                .map(|k| ((h >> (16 * k)) & 0xFFFF) as i64)
                .sum::<i64>()
                - 2 * 65535;
            (s as f64 * 2f64.powi(scale_log2 - 16)) as f32
        })
        .collect()
}

pub fn init_params() -> Vec<Vec<f32>> {
    SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| values(1000 + i as u64, n, -2))
        .collect()
}

pub fn grads(step: usize) -> Vec<Vec<f32>> {
    let scale = -5 - (step % 3) as i32;
    let mut out: Vec<Vec<f32>> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| values((step as u64 + 1) * 256 + i as u64, n, scale))
        .collect();
    let (p, b, e) = ZERO_GRAD;
    out[p][b..e].fill(0.0);
    out
}

pub fn param_set() -> ParamSet {
    ParamSet::from_specs(NAMES.iter().copied().zip(SIZES)).unwrap()
}

/// What one training run observed per step.
#[derive(Debug, Default, PartialEq)]
pub struct Trace {
    pub lr: Vec<f64>,
    pub grad_norm: Vec<f32>,
}

/// Trains `opt` from its current step to `steps` in the reference script's order: gradients,
/// clip (if `max_norm`), lr from the schedule for the steps already taken, step.
pub fn train(
    opt: &mut Optimizer,
    params: &mut [Vec<f32>],
    steps: usize,
    schedule: Option<Schedule>,
    base_lr: f64,
    max_norm: Option<f64>,
) -> Trace {
    let mut trace = Trace::default();
    for t in opt.steps_done() as usize..steps {
        let mut g = grads(t);
        if let Some(max_norm) = max_norm {
            let mut views: Vec<&mut [f32]> = g.iter_mut().map(|g| g.as_mut_slice()).collect();
            trace.grad_norm.push(clip_grad_norm(&mut views, max_norm));
        }
        let lr = schedule.map_or(base_lr, |s| s.lr(opt.steps_done()));
        trace.lr.push(lr);
        let mut pv: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gv: Vec<&[f32]> = g.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut pv, &gv, lr).unwrap();
    }
    trace
}

pub struct Fixtures {
    dir: PathBuf,
    pub index: Value,
}

impl Fixtures {
    pub fn load() -> Fixtures {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim");
        let text = std::fs::read_to_string(dir.join("index.json")).expect("fixture index");
        Fixtures {
            dir,
            index: serde_json::from_str(&text).expect("fixture index is JSON"),
        }
    }

    pub fn run(&self, name: &str) -> &Value {
        let run = &self.index["runs"][name];
        assert!(run.is_object(), "no fixture run {name}");
        run
    }

    pub fn bytes(&self, name: &str) -> Vec<u8> {
        let entry = &self.index["arrays"][name];
        let file = entry["file"]
            .as_str()
            .unwrap_or_else(|| panic!("no array {name}"));
        let bytes = std::fs::read(self.dir.join(file)).expect("fixture file");
        let width = if entry["dtype"] == "f32" { 4 } else { 1 };
        assert_eq!(
            bytes.len(),
            width * entry["len"].as_u64().unwrap() as usize,
            "{name}"
        );
        bytes
    }

    pub fn f32s(&self, name: &str) -> Vec<f32> {
        assert_eq!(self.index["arrays"][name]["dtype"], "f32", "{name}");
        self.bytes(name)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// The schedule of a run, if it has one.
    pub fn schedule(&self, run: &Value, base_lr: f64) -> Option<Schedule> {
        let s = &run["schedule"];
        let kind: ScheduleKind = s["kind"].as_str()?.parse().unwrap();
        Some(Schedule::new(
            kind,
            base_lr,
            s["warmup"].as_u64().unwrap(),
            s["total"].as_u64().unwrap(),
        ))
    }
}

/// An array of bit patterns (the fixtures store floats as bits: serde_json's default float
/// parsing is not always correctly rounded).
pub fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Distance in units in the last place between two finite f32 values.
pub fn ulps(a: f32, b: f32) -> u64 {
    let key = |x: f32| {
        let b = x.to_bits() as i64;
        if b & 0x8000_0000 != 0 {
            -(b & 0x7fff_ffff)
        } else {
            b
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

/// The spacing of f32 values at |x|.
pub fn ulp(x: f32) -> f32 {
    let a = x.abs();
    f32::from_bits(a.to_bits() + 1) - a
}

/// How far our parameters are from the reference's.
#[derive(Debug, Default)]
pub struct Diff {
    pub differ: usize,
    pub max_ulps: u64,
    pub max_abs: f32,
    /// First differing (param, index).
    pub first: Option<(usize, usize)>,
}

/// Compares our parameters with the reference's, concatenated.
pub fn compare(ours: &[Vec<f32>], reference: &[f32]) -> Diff {
    let flat: Vec<(usize, usize, f32)> = ours
        .iter()
        .enumerate()
        .flat_map(|(p, v)| v.iter().enumerate().map(move |(i, &x)| (p, i, x)))
        .collect();
    assert_eq!(flat.len(), reference.len(), "parameter count");
    let mut d = Diff::default();
    for (&(p, i, x), &r) in flat.iter().zip(reference) {
        if x.to_bits() != r.to_bits() {
            d.differ += 1;
            d.max_ulps = d.max_ulps.max(ulps(x, r));
            d.max_abs = d.max_abs.max((x - r).abs());
            d.first.get_or_insert((p, i));
        }
    }
    d
}
