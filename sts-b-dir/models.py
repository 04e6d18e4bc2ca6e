"""The STS-B-DIR model: the GLUE baseline's BiLSTM sentence-pair regressor (docs/datasets.md §2.3), in PyTorch.

(The age folders call their model file ``resnet.py``; this one holds a text model, hence ``models.py``.)

word embeddings (frozen GloVe) → highway layers (``--n_layers_highway``, 0 = identity) → dropout → BiLSTM
(``--n_layers_enc`` layers, ``--d_hid`` per direction) → dropout → masked max-pool over time: one vector per
sentence, ``u`` and ``v`` (2·d_hid) → pair feature ``[u; v; |u−v|; u∘v]`` (8·d_hid) → [FDS] → ``linear`` →
score/5, returned × 5 (the score, 0–5).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from common.models.heads import regression_head, run_head

SCORE_SCALE = 5.0     # the linear layer predicts score / 5, as the reference's loss target


class Highway(nn.Module):
    """``y = g ⊙ x + (1 − g) ⊙ relu(W_h x)`` with ``g = σ(W_g x)``, per layer (Srivastava et al., 2015).

    As AllenNLP's: the gate bias starts at 1, so a new layer mostly passes its input through."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, 2 * dim) for _ in range(num_layers))
        for layer in self.layers:
            layer.bias.data[dim:].fill_(1.0)

    def forward(self, x):
        for layer in self.layers:
            hidden, gate = layer(x).chunk(2, dim=-1)
            gate = torch.sigmoid(gate)
            x = gate * x + (1 - gate) * F.relu(hidden)
        return x


class BiLSTMPairRegressor(nn.Module):
    """Sentence-pair regressor.

    Args:
        vocab_size, d_word: embedding table (V, d_word); row 0 is padding.
        d_hid, n_layers: LSTM size per direction and depth.
        dropout: after the embeddings and after the LSTM (0.2).
        n_highway: highway layers on the embeddings (reference default 0).
        embeddings: (V, d_word) initial vectors (GloVe), or None: random (or restored from a checkpoint).
        train_words: train the embeddings (the reference freezes GloVe, ``--train_words 0``, and trains them
            from scratch with ``--glove 0``).
        fds: an :class:`~common.fds.FDS` on the pair feature (with a VIR head its
            :class:`~common.fds.ProbabilisticFDS`), or None.
        projection_dim: SRL's projector ``Linear(8·d_hid, p) → ReLU → Linear(p, p)`` on the pair feature,
            L2-normalised (the STS-B SRL model), or None.
        head, num_heads, rule: the head ``linear`` on the pair feature
            (:func:`common.models.heads.regression_head`): the references' linear layer, UVOTE's or VIR's.
    """

    def __init__(self, vocab_size: int, d_word: int, d_hid: int, n_layers: int = 2, dropout: float = 0.2,
                 n_highway: int = 0, embeddings=None, train_words: bool = False, fds=None, projection_dim=None,
                 head: str = "point", num_heads: int = 2, rule: str = "minvar"):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_word, padding_idx=0)
        if embeddings is not None:
            self.embedding.weight.data.copy_(torch.as_tensor(embeddings))
        self.embedding.weight.requires_grad_(train_words)
        self.highway = Highway(d_word, n_highway)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(d_word, d_hid, n_layers, batch_first=True, bidirectional=True)
        self.encoding_dim = 8 * d_hid
        self.fds = fds
        self.linear = regression_head(head, self.encoding_dim, num_heads=num_heads, rule=rule)
        self.detach_head = False        # RnC's encoder stage: the head learns as a probe
        self.projector = None
        if projection_dim:
            self.projector = nn.Sequential(nn.Linear(self.encoding_dim, projection_dim), nn.ReLU(),
                                           nn.Linear(projection_dim, projection_dim))

    def encode(self, tokens: torch.Tensor, lengths) -> torch.Tensor:
        """(B, T) token ids, padded with 0 (``PAD``, which no word has), and their (B,) lengths on the host (a CPU
        tensor or NumPy array: ``pack_padded_sequence`` reads them there, so lengths on the device would make the
        step wait for it) → (B, 2·d_hid) max-pooled BiLSTM states."""
        x = self.dropout(self.highway(self.embedding(tokens)))
        # Packed, so that the backward direction starts at each sentence's last token, not in the padding.
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.lstm(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=tokens.shape[1])
        states = self.dropout(states)
        # The padding mask from the tokens, on their device (from the lengths it would be a copy to it).
        return states.masked_fill((tokens == 0)[:, :, None], float("-inf")).max(dim=1).values

    def pair_feature(self, inputs) -> torch.Tensor:
        """``(tokens1, lengths1, tokens2, lengths2)`` (lengths on the host, as :meth:`encode`) → (B, 8·d_hid)
        ``[u; v; |u−v|; u∘v]``."""
        tokens1, lengths1, tokens2, lengths2 = inputs
        # Both sentences in one LSTM call: pad to the longer of the two batches and stack them.
        width = max(tokens1.shape[1], tokens2.shape[1])
        tokens = torch.cat([F.pad(tokens1, (0, width - tokens1.shape[1])),
                            F.pad(tokens2, (0, width - tokens2.shape[1]))])
        u, v = self.encode(tokens, torch.cat([torch.as_tensor(lengths1), torch.as_tensor(lengths2)])).chunk(2)
        return torch.cat([u, v, (u - v).abs(), u * v], dim=1)

    def forward(self, inputs, targets=None, smooth: bool = True) -> dict:
        """``{'pred': (B, 1) score, 'encoding': (B, 8·d_hid) pair feature (FDS-calibrated in training from
        ``--start_smooth`` on), 'projection': (B, p) unit vectors (SRL only)}``, with a UVOTE or VIR head also
        ``sigma`` (B, 1) in score units and its raw outputs (on score/5); ``targets`` (B, 1) are the scores FDS
        buckets by."""
        pair = self.pair_feature(inputs)
        head_out, encoding = run_head(self.linear, pair, fds=self.fds, targets=targets,
                                      smooth=self.training and smooth, detach=self.detach_head)
        out = {**head_out, "pred": SCORE_SCALE * head_out["pred"], "encoding": encoding}
        if "sigma" in head_out:
            out["sigma"] = SCORE_SCALE * head_out["sigma"]
        if self.projector is not None:
            out["projection"] = F.normalize(self.projector(pair), dim=1)
        return out


def build_model(vocab_size, d_word, d_hid=1500, n_layers=2, dropout=0.2, n_highway=0, embeddings=None,
                train_words=False, fds=None, projection_dim=None, head="point", num_heads=2,
                rule="minvar") -> BiLSTMPairRegressor:
    """The reference's configuration by default (2 × 1500 BiLSTM, dropout 0.2, no highway layer)."""
    return BiLSTMPairRegressor(vocab_size, d_word, d_hid, n_layers, dropout, n_highway, embeddings, train_words,
                               fds, projection_dim, head, num_heads, rule)
