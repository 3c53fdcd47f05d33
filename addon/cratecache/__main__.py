from .cli import main
from .operations.exiting import leave

leave(main())
