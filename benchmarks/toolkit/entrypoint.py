"""Entry of the baseline image: `serve` starts the toolkit's MMS as the Hugging Face DLC does.

The toolkit's ``serving.main`` starts multi-model-server with its own handler service and waits
on it; anything else runs as a command (``docker run IMAGE bash``).
"""

import os
import sys

if __name__ == "__main__":
    args = sys.argv[1:] or ["serve"]
    if args[0] == "serve":
        from sagemaker_huggingface_inference_toolkit import serving

        serving.main()
    else:
        os.execvp(args[0], args)
