from typing import Any

def configure(
    type: type[Any], data: Any, event: Any, id: Any, retry: Any, last_event_id: Any, /
) -> None: ...
def scan_simple(
    chunk: bytes, pos: int, stop: int, limit: int, last_event_id: str, /
) -> tuple[list[Any], int]: ...
