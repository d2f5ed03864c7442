"""The fake's per-request logits processor adapter (vLLM's V1 interface)."""


class AdapterLogitsProcessor:
    def __init__(self, vllm_config, device, is_pin_memory):
        self.vllm_config, self.device, self.is_pin_memory = vllm_config, device, is_pin_memory

    def is_argmax_invariant(self) -> bool:
        raise NotImplementedError

    def new_req_logits_processor(self, params):
        raise NotImplementedError


RequestLogitsProcessor = object
