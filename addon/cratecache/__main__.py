from .cli import main
from .exiting import leave

leave(main())
