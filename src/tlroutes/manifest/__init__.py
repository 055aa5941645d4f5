"""The manifest beside a run's weights: what ``tlroutes.load``, ``predict`` and ``export`` need.

A run folder that holds a trained model (``model.safetensors``) holds ``manifest.json`` beside it
(:data:`MANIFEST_FILE`), written atomically when the model is saved:

- ``model``: how to rebuild the network — the trunk's factory and arguments, each stem's
  factory, arguments and domain, each head's task and layout, LoRA adapters if any;
- ``heads``: what each head serves — its problem (the run file's data block and role), task
  kind, label names, output width, the stem that reads its inputs, and the preprocessing that
  turns new data into that stem's input (table columns, image transforms with their resolved
  size, mean and std, the tokenizer for text);
- ``outputs``: what a head returns (logits for classification and multilabel, values for
  regression), which is also what an exported graph returns;
- ``precision`` (the run's ``hardware.precision``) and ``weights_dtype``: the weights are saved
  in the dtype they trained in (float64 under "64-true", bfloat16 under "bf16-true", float32
  otherwise), and :func:`tlroutes.load` rebuilds the model in that dtype and predicts under
  that precision (the mixed ones under the same autocast), as the run evaluated its test split;
- the tlroutes and torch versions, and the weights file's sha256.

A short JSON of the same facts goes into the weights file's safetensors metadata
(``tlroutes.manifest``), so a copied weights file still says what it is.

- :mod:`~tlroutes.manifest.record`: what the runner records while a route runs, and the hook
  that writes the manifest when the model is saved;
- :mod:`~tlroutes.manifest.describe`: a live model as the manifest's ``model`` block;
- :mod:`~tlroutes.manifest.rebuild`: the manifest's ``model`` block as a model again;
- :mod:`~tlroutes.manifest.files`: reading a run folder's manifests, with the errors a user sees.
"""

from tlroutes.manifest.files import MANIFEST_FILE, find_manifests, read_manifest
from tlroutes.manifest.record import note_problem, note_saved, recording

__all__ = ["MANIFEST_FILE", "find_manifests", "note_problem", "note_saved", "read_manifest",
           "recording"]
