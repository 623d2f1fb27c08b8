"""MARC's training step as a user would write it without Keras: transformers + peft + torch.

The peer of `benchmarks/train_peers.py` (issue 32): the Hugging Face BERT
checkpoint with `peft` LoRA on the query and value projections (rank r,
alpha r, on the modules keras-hub's `enable_lora` picks; see
`TorchMARC.copy_from_keras` for how the two LoRA forms differ), mean pooling, the compression and
matching networks as `torch.nn.Sequential`, and BCE - lambda (HSIC_u + HSIC_i)
with the median-bandwidth Gaussian HSIC of `marc_keras.losses.hsic`, on the
same `PairBatches` dicts (each distinct text once, gathered by index). The
BERT's GELU is the tanh form keras-hub uses (`gelu_pytorch_tanh`), so that
equal weights give equal losses; its speed does not depend on the form.
"""

from __future__ import annotations

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import BertModel

TOWERS = ("user", "item")


def _mlp(input_dim, hidden_units, output_dim):
    layers, width = [], input_dim
    for units in hidden_units:
        layers += [torch.nn.Linear(width, units), torch.nn.ReLU()]
        width = units
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, output_dim))


def hsic(x, y, scale="normalised"):
    """`marc_keras.hsic` in torch: Gaussian kernels, median bandwidth without gradient."""
    batch = x.shape[0]

    def kernel(values):
        squared = (values * values).sum(dim=1)
        distances = torch.clamp(squared[:, None] + squared[None, :] - 2 * values @ values.T, min=0)
        flat = torch.sort(distances.reshape(-1)).values[batch:]
        bandwidth = torch.clamp(torch.quantile(flat, 0.5).detach(), min=1e-12)
        return torch.exp(-distances / (2 * bandwidth))

    kernel_x, kernel_y = kernel(x), kernel(y)
    centred = (
        kernel_x
        - kernel_x.mean(dim=0, keepdim=True)
        - kernel_x.mean(dim=1, keepdim=True)
        + kernel_x.mean()
    )
    trace = (centred * kernel_y).sum()
    return trace if scale == "trace" else trace / (batch - 1) ** 2


class TorchMARC(torch.nn.Module):
    """MARC (shared compression, matching head, BCE objective) on transformers + peft.

    Args:
        checkpoint_dir: a Hugging Face BERT checkpoint directory.
        lora_rank: LoRA rank on `query` and `value`.
        compressed_dim: width of the compressed vectors.
        compression_hidden_units: hidden widths of the compression network.
        matching_hidden_units: hidden widths of the matching network.
        hsic_weight: lambda.
        hsic_rows: "pairs" or "distinct", as `MARC`'s.
        hsic_scale: "normalised" or "trace".
    """

    def __init__(
        self,
        checkpoint_dir,
        lora_rank=8,
        compressed_dim=128,
        compression_hidden_units=(256,),
        matching_hidden_units=(128,),
        hsic_weight=0.01,
        hsic_rows="pairs",
        hsic_scale="normalised",
    ):
        super().__init__()
        bert = BertModel.from_pretrained(
            checkpoint_dir, hidden_act="gelu_pytorch_tanh", add_pooling_layer=False
        )
        config = LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=["query", "value"])
        self.backbone = get_peft_model(bert, config)
        hidden = bert.config.hidden_size
        self.compression = _mlp(hidden, compression_hidden_units, compressed_dim)
        self.matching = _mlp(3 * compressed_dim, matching_hidden_units, 1)
        self.hsic_weight = float(hsic_weight)
        self.hsic_rows = hsic_rows
        self.hsic_scale = hsic_scale
        # from_pretrained returns the BERT in eval mode; training has dropout on, as Keras' fit.
        self.train()

    def copy_from_keras(self, model):
        """Takes a fresh Keras `MARC`'s head weights (same checkpoint, LoRA still B = 0).

        keras-hub's LoRA is not peft's: on an `EinsumDense` kernel (d, N, H)
        its factors are A (d, N, r) and B (r, H), an update of rank up to N r
        with 37,120 weights per MiniLM projection at r = 8, where peft's
        A (r, d), B (d, r) has 6,144. Both start as a no-op (B = 0), so fresh
        models compute the same; a trained Keras LoRA has no peft equivalent.

        Raises:
            ValueError: the Keras model's LoRA B factors are not all zero.
        """
        trained = [
            variable.path
            for variable in model.backbone.trainable_weights
            if "lora_kernel_b" in variable.path and np.any(np.asarray(variable) != 0)
        ]
        if trained:
            raise ValueError(
                f"The Keras model's LoRA is trained ({trained[0]} is not zero); keras-hub's "
                "per-head LoRA factors have no peft equivalent. Start from a fresh model."
            )
        with torch.no_grad():
            for ours, theirs in (
                (self.compression, model.compression),
                (self.matching, model.matching),
            ):
                linear = [module for module in ours if isinstance(module, torch.nn.Linear)]
                for module, dense in zip(linear, theirs.dense_layers):
                    module.weight.copy_(torch.from_numpy(np.asarray(dense.kernel).T))
                    module.bias.copy_(torch.from_numpy(np.asarray(dense.bias)))
        return self

    def _tower(self, batch, tower):
        buckets, masks = batch[f"{tower}_token_ids"], batch[f"{tower}_padding_mask"]
        if not isinstance(buckets, (tuple, list)):
            buckets, masks = (buckets,), (masks,)
        pooled = []
        for ids, mask in zip(buckets, masks):
            mask = torch.as_tensor(np.asarray(mask), dtype=torch.long)
            states = self.backbone(
                input_ids=torch.as_tensor(np.asarray(ids), dtype=torch.long), attention_mask=mask
            ).last_hidden_state
            weights = mask.to(states.dtype)[:, :, None]
            pooled.append((states * weights).sum(1) / weights.sum(1).clamp(min=1.0))
        distinct = torch.cat(pooled)  # (D, d)
        index = batch.get(f"{tower}_index")
        if index is None:
            return distinct, None
        return distinct[torch.as_tensor(np.asarray(index), dtype=torch.long)], distinct

    def losses(self, batch, labels):
        """(loss, bce, {tower: HSIC}) of one batch."""
        compressed, hsic_terms = {}, {}
        for tower in TOWERS:
            original, distinct = self._tower(batch, tower)
            compressed[tower] = self.compression(original)
            if self.hsic_weight > 0:
                if self.hsic_rows == "distinct" and distinct is not None:
                    hsic_terms[tower] = hsic(distinct, self.compression(distinct), self.hsic_scale)
                else:
                    hsic_terms[tower] = hsic(original, compressed[tower], self.hsic_scale)
        user, item = compressed["user"], compressed["item"]
        logits = self.matching(torch.cat([user, item, user * item], dim=-1))[:, 0]
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.float32).reshape(-1)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        loss = bce - self.hsic_weight * sum(hsic_terms.values()) if hsic_terms else bce
        return loss, bce, hsic_terms


def adamw(model, learning_rate, weight_decay):
    """torch's AdamW with Keras' epsilon, over the trainable parameters only."""
    return torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=learning_rate,
        weight_decay=weight_decay,
        eps=1e-7,
    )


def train_step(model, optimizer, batch, labels):
    optimizer.zero_grad(set_to_none=True)
    loss, _, _ = model.losses(batch, labels)
    loss.backward()
    optimizer.step()
    return float(loss)
