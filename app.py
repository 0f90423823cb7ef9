"""OWLv2 few-shot studio: `python app.py --help`. The code lives in `ui/main.py` (installed as
the `owl-studio app` command); the names below are re-exported for scripts that import `app`."""

from ui.main import (  # noqa: F401  (re-exported)
    DEFAULT_MODEL_ID,
    RANDOM_PRESETS,
    cannot_load_message,
    load_owl_model,
    main,
    parse_args,
)

if __name__ == "__main__":
    raise SystemExit(main())
