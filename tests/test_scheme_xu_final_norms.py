"""AdaNorm and LayerNorm-simple as the authors released them (lancopku/AdaNorm): ``--adanorm-sites final`` /
``--ln-simple-sites final`` put the new norm at the encoder's and decoder's final norm only, and every
sub-layer keeps fairseq's LayerNorm (their ``transformer_layer.py`` builds ``LayerNorm(self.embed_dim)``, their
``transformer.py`` passes ``--lnv`` to the two final norms alone). Such a model is Pre-LN, weight for weight,
with its two final LayerNorms swapped for the scheme's norm; the default (every site) is unchanged."""

import pytest
import torch
from fairseq.modules import LayerNorm as FairseqLayerNorm

from fairseq_entry import build_model
from normpos_fairseq.modules.adanorm import AdaNorm
from normpos_fairseq.modules.layernorm_simple import LayerNormSimple
from test_scheme_norms import TINY, norm_sites

SCHEMES = {"adanorm": ("--adanorm-sites", AdaNorm), "ln_simple": ("--ln-simple-sites", LayerNormSimple)}
LAYER_NORM = type(FairseqLayerNorm(4))  # fairseq's LayerNorm is torch's nn.LayerNorm without apex


def build(dict_dir, arch_scheme, *extra):
    return build_model(dict_dir, "--arch", f"normpos_iwslt_de_en_{arch_scheme}", *TINY, "--dropout", "0", *extra,
                       seed=3)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_final_sites_only_is_pre_ln_with_the_two_final_norms_swapped(dict_dir, scheme):
    flag, norm_class = SCHEMES[scheme]
    released = build(dict_dir, scheme, flag, "final")
    sites = dict(norm_sites(released))
    finals = {"encoder.layer_norm", "decoder.layer_norm"}
    assert {name for name, m in sites.items() if type(m) is norm_class} == finals
    assert all(type(m) is LAYER_NORM for name, m in sites.items() if name not in finals)  # with gain and bias

    pre_ln = build(dict_dir, "pre_ln")
    ours, theirs = released.state_dict(), pre_ln.state_dict()
    assert set(theirs) - set(ours) == {f"{f}.{p}" for f in finals for p in ("weight", "bias")}
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    pre_ln.encoder.layer_norm, pre_ln.decoder.layer_norm = norm_class(32), norm_class(32)
    src = torch.randint(4, 90, (2, 7))
    prev = torch.randint(4, 90, (2, 5))
    released.eval()
    pre_ln.eval()
    with torch.no_grad():
        out = released(src, torch.tensor([7, 7]), prev)[0]
        assert torch.allclose(out, pre_ln(src, torch.tensor([7, 7]), prev)[0], atol=1e-6)

    every = dict(norm_sites(build(dict_dir, scheme)))  # the default: the paper's description, every site
    assert all(type(m) is norm_class for m in every.values()) and set(every) == set(sites)


def test_a_site_choice_other_than_every_or_final_is_refused(dict_dir):
    with pytest.raises(SystemExit):  # fairseq's argparse: "invalid choice"
        build(dict_dir, "adanorm", "--adanorm-sites", "sublayers")
