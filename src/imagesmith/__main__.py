from imagesmith.cli import main

main()
