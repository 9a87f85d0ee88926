from foldermon.cli import main

raise SystemExit(main())
