"""Every family quirk rlcamp acts on, for every tiny family, in one table (rlcamp.models.families)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

from rlcamp.models import families
from rlcamp.models.tiny import TINY_FAMILIES, _family_config

# family: (plain decoder, sliding window, MoE router loss, tied embeddings)
QUIRKS = {
    "llama": (True, False, False, True),
    "qwen2": (True, False, False, True),
    "qwen3": (True, False, False, True),
    "gemma2": (False, True, False, True),  # soft-capped logits, alternating sliding-window layers
    "qwen2_moe": (False, False, True, True),
    "deepseek_v3": (False, False, False, True),  # its gate's balance is bias-based: no aux-loss weight
}


def test_the_table_covers_every_tiny_family():
    assert set(QUIRKS) == set(TINY_FAMILIES)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_family_quirks(family):
    config = _family_config(family, 400, 0, 2)
    plain, sliding, moe, tied = QUIRKS[family]
    assert families.is_plain_decoder(config) is plain
    assert families.has_sliding_window(config) is sliding
    assert (families.router_aux_loss_coef(config) > 0) is moe
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    assert families.ties_output_to_embeddings(model) is tied
    layers = families.decoder_layers(model)
    assert len(layers) == config.num_hidden_layers
    critic_config = _family_config(family, 400, 0, 2)
    critic_config.num_labels = 1
    critic = AutoModelForTokenClassification.from_config(critic_config)
    assert families.value_head(critic).out_features == 1
    assert not families.ties_output_to_embeddings(critic)  # a value head is never the embedding


def test_no_value_head_is_named():
    with pytest.raises(Exception, match="has no 'score' or 'classifier' head"):
        families.value_head(torch.nn.Linear(2, 2))
