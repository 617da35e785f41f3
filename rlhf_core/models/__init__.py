"""The language model itself: finding, converting and loading the base model and tokenizer offline
(`loading`), the `ModelStack` that carries one frozen base with named LoRA adapters (`policy`,
`value`, `reward`, optionally a frozen `reference`) and scalar heads (`stack`, the reward head in
`reward_head`, adapter files in `adapter_files`), turning conversations into padded token tensors
(`batching`), decoding (`generation`), and tiny models built from a config for tests (`tiny`). It may
import `algorithms` and `config`; never the database or the loop.
The process reward model's `prm` adapter and step head, added on demand (`process_reward`).
"""
