"""What goes wrong building a library's model (torchvision, timm) as one error line: an option
it refuses, weights it cannot download, weights that do not load into it as built."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlparse

from sft.errors import SFTError, first_line, out_of_memory


def download_failure(what: str, source: str, err: BaseException, cache: str) -> SFTError:
    """One line for pretrained weights that could not be downloaded (typically: offline)."""
    reason = str(getattr(err, "reason", err)).strip().splitlines()
    return SFTError(
        f"could not download {what} from {source} (no network? {type(err).__name__}: "
        f"{reason[0] if reason else ''}); set model.backbone.pretrained=false, or "
        f"+model.backbone.checkpoint=PATH to a local state_dict, or put the weights into {cache}"
    )


def url_unreachable(url: str, cache: str) -> OSError | None:
    """Why weights at `url` that are not in the download `cache` folder cannot be had (None:
    cached, or the server answers). Asked before the library downloads them: torch.hub prints
    its "Downloading: ..." line first, and leaves an empty cache folder, when offline."""
    if os.path.isfile(os.path.join(cache, os.path.basename(urlparse(url).path))):
        return None
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).close()
    except urllib.error.HTTPError:
        return None  # the server answered (some refuse HEAD): the download says the rest
    except OSError as err:  # no network, no such host, a timeout
        return err
    return None


@contextmanager
def model_build_errors(
    library: str,
    model_name: str,
    options: Mapping[str, object],
    pretrained: bool,
    download_failed: Callable[[OSError], SFTError],
) -> Iterator[None]:
    """Around building `library`'s `model_name` with the user's `options`: `download_failed`
    says why the weights could not be fetched (urllib's and the hub's errors are OSErrors)."""
    try:
        yield
    except (TypeError, ValueError) as err:  # an unknown option, or one the weights fix
        raise SFTError(
            f"model.backbone: {library} model {model_name!r} refused the option(s) "
            f"{', '.join(options)} ({first_line(err)})"
        ) from err
    except (OSError, RuntimeError) as err:
        # not a download's or the weights' fault: as raised (sft's command says it in one line)
        if not pretrained or out_of_memory(err) is not None:
            raise
        if isinstance(err, OSError):
            raise download_failed(err) from err
        # a RuntimeError: e.g. options that change the layers the weights are for
        raise SFTError(
            f"model.backbone: the pretrained weights of {library} model {model_name!r} do not "
            f"load into it as built with {', '.join(options) or 'its defaults'} "
            f"({first_line(err)})"
        ) from err
