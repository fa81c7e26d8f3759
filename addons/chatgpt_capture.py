"""mitmdump -s addons/chatgpt_capture.py --set capture_path=captures/mine.parquet

A thin loader: the addon's logic lives in the ``analyzer`` package (analyzer/capture/addon.py).
Loading it also registers the ``chatwire`` content view (analyzer/capture/contentview.py).
"""

import sys
from pathlib import Path

# Let the script work from a clone that was not pip-installed into mitmdump's interpreter.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from analyzer.capture import contentview  # noqa: E402
from analyzer.capture.addon import ChatGPTCapture  # noqa: E402

contentview.register()

addons = [ChatGPTCapture()]
