//! From a merged [`WireCard`] to a [`Card`]: defaults filled in, every check run, every error
//! collected and located (a user fixes a card in one pass, not one error per run).

use std::path::Path;

use crate::error::{CardError, CardErrors, ErrorKind};
use crate::span::DocPath;
use crate::spec::*;
use crate::wire::*;
use crate::zoo::Provenance;

mod recipe;
mod weights;

/// The placement name for "on the last feature map, before the classifier".
pub const HEAD_SITE: &str = "head";

/// Collects located errors while a card is checked.
pub(crate) struct Checker<'a> {
    prov: &'a Provenance,
    errors: Vec<CardError>,
    /// "the input is 32x32 (`input.size` at FILE:L:C)", for errors the input size causes.
    input_note: String,
}

impl Checker<'_> {
    pub(crate) fn push(&mut self, kind: ErrorKind, path: &DocPath, msg: String, help: &str) {
        let mut e = self.prov.error(kind, path, msg);
        if !help.is_empty() {
            e = e.help(help);
        }
        self.errors.push(e);
    }

    /// A required value: reports it missing (with an example of how to write it) when absent.
    pub(crate) fn required<T>(&mut self, v: Option<T>, path: &DocPath, example: &str) -> Option<T> {
        if v.is_none() {
            let msg = format!("missing `{path}`");
            self.push(
                ErrorKind::Missing,
                path,
                msg,
                &format!("add `{example}`, or extend a card that sets it"),
            );
        }
        v
    }

    /// A required count that must be at least 1.
    pub(crate) fn count(
        &mut self,
        v: Option<usize>,
        path: &DocPath,
        example: &str,
    ) -> Option<usize> {
        let v = self.required(v, path, example)?;
        self.at_least_one(v, path)
    }

    pub(crate) fn at_least_one(&mut self, v: usize, path: &DocPath) -> Option<usize> {
        if v == 0 {
            self.push(ErrorKind::Invalid, path, "must be at least 1".into(), "");
            return None;
        }
        Some(v)
    }

    /// A number that must lie in `[lo, hi)` (or `[lo, hi]` when `inclusive`).
    pub(crate) fn in_range(
        &mut self,
        v: f64,
        path: &DocPath,
        lo: f64,
        hi: f64,
        inclusive: bool,
    ) -> bool {
        let ok = v.is_finite() && v >= lo && if inclusive { v <= hi } else { v < hi };
        if !ok {
            let close = if inclusive { "]" } else { ")" };
            self.push(
                ErrorKind::Invalid,
                path,
                format!("{v} is out of range [{lo}, {hi}{close}"),
                "",
            );
        }
        ok
    }

    /// Rejects a field that means nothing for this kind of entry.
    pub(crate) fn unused<T>(&mut self, v: &Option<T>, path: &DocPath, why: &str) {
        if v.is_some() {
            self.push(
                ErrorKind::Invalid,
                path,
                format!("`{path}` {why}"),
                "remove it",
            );
        }
    }
}

/// Feature-map geometry after a stage, for the checks that need it.
struct Site {
    name: String,
    channels: usize,
    size: usize,
}

pub(crate) fn validate(
    id: &str,
    own_name: Option<&str>,
    wire: WireCard,
    prov: &Provenance,
    file: &Path,
) -> Result<Card, CardErrors> {
    let mut ck = Checker {
        prov,
        errors: Vec::new(),
        input_note: String::new(),
    };
    let root = DocPath::default();
    if let Some(name) = own_name.filter(|n| *n != id) {
        ck.push(
            ErrorKind::Invalid,
            &root.key("name"),
            format!("card name `{name}` differs from its file name `{id}`"),
            &format!("rename the file to `{name}.yaml`, or write `name: {id}`"),
        );
    }
    let input_path = root.key("input");
    let input = ck.required(wire.input, &input_path, "input: {channels: 3, size: 224}");
    let channels = input
        .as_ref()
        .and_then(|i| ck.count(i.channels, &input_path.key("channels"), "channels: 3"));
    let size = input
        .as_ref()
        .and_then(|i| ck.count(i.size, &input_path.key("size"), "size: 224"));
    if let Some(size) = size {
        let (file, at) = prov.locate(&input_path.key("size"), ErrorKind::Invalid);
        let at = at
            .map(|a| format!(":{}:{}", a.line, a.col))
            .unwrap_or_default();
        ck.input_note = format!(
            "the input is {size}x{size} (`input.size` at {}{at}); ",
            file.display()
        );
    }
    let classes = ck.count(wire.classes, &root.key("classes"), "classes: 1000");

    let (mut stages, sites) = match (channels, size) {
        (Some(c), Some(s)) => backbone(&mut ck, wire.backbone, c, s),
        _ => (Vec::new(), Vec::new()),
    };
    let head = head(&mut ck, wire.head, sites.last());
    let mut head_attention = Vec::new();
    if let Some(entries) = wire.attention {
        attention(&mut ck, entries, &sites, &mut stages, &mut head_attention);
    }
    let recipe = wire
        .recipe
        .and_then(|r| recipe::recipe(&mut ck, r, &root.key("recipe")));
    let layout = wire.layout.unwrap_or_default();
    let weights = wire
        .weights
        .and_then(|w| weights::weights(&mut ck, w, &root.key("weights"), layout));

    if !ck.errors.is_empty() {
        return Err(CardErrors(ck.errors));
    }
    let (Some(channels), Some(size), Some(classes), Some(head)) = (channels, size, classes, head)
    else {
        unreachable!("a missing required field always records an error");
    };
    Ok(Card {
        name: id.to_string(),
        summary: wire.summary.unwrap_or_default(),
        source: file.to_path_buf(),
        extends: wire.extends.unwrap_or_default(),
        input: Input { channels, size },
        classes,
        layout,
        stages,
        head_attention,
        head,
        recipe,
        weights,
    })
}

fn backbone(
    ck: &mut Checker,
    wire: Option<indexmap::IndexMap<String, WireStage>>,
    mut channels: usize,
    mut size: usize,
) -> (Vec<Stage>, Vec<Site>) {
    let path = DocPath::default().key("backbone");
    let Some(wire) = ck.required(
        wire,
        &path,
        "backbone: {conv1: {conv: {out: 64, kernel: 3}}}",
    ) else {
        return (Vec::new(), Vec::new());
    };
    if wire.is_empty() {
        ck.push(
            ErrorKind::Invalid,
            &path,
            "the backbone has no stages".into(),
            "add at least one stage",
        );
    }
    let (mut stages, mut sites) = (Vec::new(), Vec::new());
    for (name, stage) in wire {
        let sp = path.key(&name);
        if name == HEAD_SITE {
            ck.push(
                ErrorKind::Invalid,
                &sp,
                "`head` is reserved for attention before the classifier".into(),
                "rename the stage",
            );
        }
        let Some(wc) = ck.required(stage.conv, &sp.key("conv"), "conv: {out: 64, kernel: 3}")
        else {
            continue;
        };
        let cp = sp.key("conv");
        let (Some(out), Some(kernel)) = (
            ck.count(wc.out, &cp.key("out"), "out: 64"),
            ck.count(wc.kernel, &cp.key("kernel"), "kernel: 3"),
        ) else {
            continue;
        };
        let stride = wc
            .stride
            .map_or(Some(1), |s| ck.at_least_one(s, &cp.key("stride")));
        let groups = wc
            .groups
            .map_or(Some(1), |g| ck.at_least_one(g, &cp.key("groups")));
        let (Some(stride), Some(groups)) = (stride, groups) else {
            continue;
        };
        let padding = wc.padding.unwrap_or(0);
        if !channels.is_multiple_of(groups) || !out.is_multiple_of(groups) {
            ck.push(
                ErrorKind::Invalid,
                &cp.key("groups"),
                format!("groups: {groups} must divide both the {channels} input and {out} output channels of `{name}`"),
                "pick a groups value that divides both",
            );
        }
        let conv = Conv {
            out,
            kernel,
            stride,
            padding,
            groups,
        };
        let Some(s) = shrink(ck, &cp, &name, size, kernel, stride, padding, "kernel") else {
            continue;
        };
        size = s;
        channels = out;
        let lrn = stage.lrn.and_then(|l| lrn(ck, l, &sp.key("lrn")));
        let site = Site {
            name: name.clone(),
            channels,
            size,
        };
        let pool = stage.pool.and_then(|p| {
            let pp = sp.key("pool");
            let kernel = ck.count(p.kernel, &pp.key("kernel"), "kernel: 3")?;
            let stride = p
                .stride
                .map_or(Some(kernel), |s| ck.at_least_one(s, &pp.key("stride")))?;
            let padding = p.padding.unwrap_or(0);
            if 2 * padding > kernel {
                ck.push(
                    ErrorKind::Invalid,
                    &pp.key("padding"),
                    format!("padding {padding} exceeds half the kernel {kernel}"),
                    "use padding <= kernel / 2",
                );
                return None;
            }
            size = shrink(
                ck,
                &pp,
                &name,
                size,
                kernel,
                stride,
                padding,
                "pooling window",
            )?;
            Some(Pool {
                kernel,
                stride,
                padding,
            })
        });
        sites.push(site);
        stages.push(Stage {
            name,
            conv,
            lrn,
            attention: Vec::new(),
            pool,
        });
    }
    // The head sees the map after the last stage's pooling.
    if let Some(last) = sites.last() {
        sites.push(Site {
            name: HEAD_SITE.into(),
            channels: last.channels,
            size,
        });
    }
    (stages, sites)
}

/// Output size of a window op, or an error when the map shrinks to nothing.
#[allow(clippy::too_many_arguments)]
fn shrink(
    ck: &mut Checker,
    path: &DocPath,
    stage: &str,
    size: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    what: &str,
) -> Option<usize> {
    if size + 2 * padding < kernel {
        ck.push(
            ErrorKind::Shrinks,
            path,
            format!("the feature map shrinks to nothing at `{stage}`: {size}x{size} (+{padding} padding) is smaller than the {kernel}x{kernel} {what}"),
            &format!("{}use a larger input, more padding, or fewer downsampling steps", ck.input_note),
        );
        return None;
    }
    Some((size + 2 * padding - kernel) / stride + 1)
}

fn lrn(ck: &mut Checker, w: WireLrn, path: &DocPath) -> Option<Lrn> {
    let size = ck.count(w.size, &path.key("size"), "size: 5")?;
    let alpha = w.alpha.unwrap_or(1e-4);
    let beta = w.beta.unwrap_or(0.75);
    let k = w.k.unwrap_or(1.0);
    let ok = ck.in_range(alpha, &path.key("alpha"), 0.0, f64::MAX, true)
        & ck.in_range(beta, &path.key("beta"), 0.0, f64::MAX, true)
        & ck.in_range(k, &path.key("k"), f64::MIN_POSITIVE, f64::MAX, true);
    ok.then_some(Lrn {
        size,
        alpha,
        beta,
        k,
        convention: w.convention.unwrap_or_default(),
    })
}

fn head(ck: &mut Checker, w: Option<WireHead>, last: Option<&Site>) -> Option<Head> {
    let path = DocPath::default().key("head");
    let w = ck.required(w, &path, "head: {hidden: [4096, 4096], dropout: 0.5}")?;
    let pool = match w.pool {
        Some(p) => Some(ck.at_least_one(p, &path.key("pool"))?),
        None => None,
    };
    let dropout = w.dropout.unwrap_or(0.0);
    let mut ok = ck.in_range(dropout, &path.key("dropout"), 0.0, 1.0, false);
    let hidden = w.hidden.unwrap_or_default();
    for (i, h) in hidden.iter().enumerate() {
        ok &= ck.at_least_one(*h, &path.key("hidden").index(i)).is_some();
    }
    let _ = last;
    ok.then_some(Head {
        pool,
        hidden,
        dropout,
    })
}

fn attention(
    ck: &mut Checker,
    entries: Vec<WireAttention>,
    sites: &[Site],
    stages: &mut [Stage],
    head_attention: &mut Vec<AttentionModule>,
) {
    let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
    for (i, e) in entries.into_iter().enumerate() {
        let path = DocPath::default().key("attention").index(i);
        let kind = e.kind;
        let (default_r, default_k) = match kind {
            AttentionKind::Se | AttentionKind::Cbam => (Some(16), None),
            AttentionKind::Nonlocal => (Some(8), None),
            AttentionKind::Eca => (None, Some(3)),
            AttentionKind::Spatial => (None, Some(7)),
        };
        let kernel_default = if kind == AttentionKind::Cbam {
            Some(7)
        } else {
            default_k
        };
        if default_r.is_none() {
            ck.unused(
                &e.reduction,
                &path.key("reduction"),
                &format!(
                    "does not apply to `{}` (it has no bottleneck)",
                    kind.as_str()
                ),
            );
            ck.unused(
                &e.divisor,
                &path.key("divisor"),
                &format!(
                    "does not apply to `{}` (it has no bottleneck)",
                    kind.as_str()
                ),
            );
        }
        if kernel_default.is_none() {
            ck.unused(
                &e.kernel,
                &path.key("kernel"),
                &format!(
                    "does not apply to `{}` (it has no convolution kernel)",
                    kind.as_str()
                ),
            );
        }
        let reduction = e.reduction.or(default_r).unwrap_or(1);
        let divisor = e.divisor.unwrap_or(1);
        let kernel = e.kernel.or(kernel_default).unwrap_or(1);
        if kernel.is_multiple_of(2) {
            ck.push(
                ErrorKind::Invalid,
                &path.key("kernel"),
                format!("kernel {kernel} must be odd so the map keeps its size"),
                "use 3, 5 or 7",
            );
        }
        if reduction == 0 || divisor == 0 {
            let field = if reduction == 0 {
                "reduction"
            } else {
                "divisor"
            };
            ck.push(
                ErrorKind::Invalid,
                &path.key(field),
                "must be at least 1".into(),
                "",
            );
            continue;
        }
        let (from, to) = match &e.strength {
            Some(s) => (s.from, s.to.unwrap_or(s.from)),
            None => (1.0, 1.0),
        };
        let sp = path.key("strength");
        if !(ck.in_range(from, &sp.key("from"), 0.0, 1.0, true)
            & ck.in_range(to, &sp.key("to"), 0.0, 1.0, true))
        {
            continue;
        }
        let fusion = e.fusion.and_then(|f| {
            let fp = path.key("fusion");
            if !kind.has_spatial_map() {
                ck.push(
                    ErrorKind::Invalid,
                    &fp,
                    format!(
                        "multi-scale fusion needs a spatial attention map; `{}` has none",
                        kind.as_str()
                    ),
                    "use it with `spatial` or `cbam`, or remove `fusion`",
                );
                return None;
            }
            if f.scales.is_empty() {
                ck.push(
                    ErrorKind::Invalid,
                    &fp.key("scales"),
                    "no scales".into(),
                    "write e.g. `scales: [1, 2, 4]`",
                );
                return None;
            }
            let mut ok = true;
            for (j, s) in f.scales.iter().enumerate() {
                ok &= ck.at_least_one(*s, &fp.key("scales").index(j)).is_some();
            }
            ok.then_some(Fusion {
                scales: f.scales,
                mode: f.mode.unwrap_or_default(),
            })
        });
        if e.at.is_empty() {
            ck.push(
                ErrorKind::Invalid,
                &path.key("at"),
                "no sites".into(),
                &format!("write e.g. `at: [{}]`", names.join(", ")),
            );
        }
        let n = e.at.len();
        for (j, at) in e.at.iter().enumerate() {
            let ap = path.key("at").index(j);
            let Some(site) = sites.iter().find(|s| &s.name == at) else {
                let near = crate::error::closest(at, names.iter().copied());
                let mut help = format!("this card's sites are {}", names.join(", "));
                if let Some(near) = near {
                    help = format!("did you mean `{near}`? {help}");
                }
                ck.push(
                    ErrorKind::UnknownStage,
                    &ap,
                    format!("`at: {at}`: there is no stage `{at}`"),
                    &help,
                );
                continue;
            };
            let strength = if n > 1 {
                from + (to - from) * j as f64 / (n - 1) as f64
            } else {
                from
            };
            let module = AttentionModule {
                kind,
                reduction,
                divisor,
                kernel,
                strength,
                fusion: fusion.clone(),
            };
            if default_r.is_some() && reduction > site.channels {
                ck.push(
                    ErrorKind::Invalid,
                    &path.key("reduction"),
                    format!(
                        "reduction {reduction} is larger than the {} channels at `{at}`",
                        site.channels
                    ),
                    &format!("use a reduction of at most {}", site.channels),
                );
                continue;
            }
            if let Some(f) = &module.fusion {
                if let Some(s) = f.scales.iter().find(|s| **s > site.size) {
                    ck.push(
                        ErrorKind::Shrinks,
                        &path.key("fusion").key("scales"),
                        format!("the feature map shrinks to nothing: pooling the {0}x{0} map at `{at}` by {s}", site.size),
                        &format!("use scales of at most {}", site.size),
                    );
                    continue;
                }
            }
            match stages.iter_mut().find(|s| &s.name == at) {
                Some(stage) => stage.attention.push(module),
                None => head_attention.push(module),
            }
        }
    }
}
